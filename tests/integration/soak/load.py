"""A bounded prediction load on 127.0.0.1 that records every request's outcome."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import requests

BLANK_DIGIT = [[0] * 28] * 28


@dataclass(frozen=True)
class Record:
    started: float  # time.monotonic()
    seconds: float
    status: int  # 0: no HTTP answer at all (connection refused or reset)
    version: int | None  # the model version the answer names
    error: str = ""


class Load:
    """`clients` threads, each with its own keep-alive session, POST /predict back to back
    from `with Load(...)` until the block ends. Every outcome lands in `records`."""

    def __init__(self, url: str, clients: int = 4, headers: dict[str, str] | None = None) -> None:
        self.url = url + "/predict"
        self.headers = headers or {}
        self.records: list[Record] = []  # list.append is atomic: no lock needed
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _client(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = session.post(self.url, json={"instances": [BLANK_DIGIT]}, headers=self.headers,
                                        timeout=30)
                ok = response.status_code == 200
                record = Record(started, time.monotonic() - started, response.status_code,
                                response.json().get("model_version") if ok else None,
                                "" if ok else response.text[:200])
            except (requests.RequestException, ValueError) as error:
                record = Record(started, time.monotonic() - started, 0, None, f"{type(error).__name__}: {error}")
            self.records.append(record)

    def window(self, since: float = -math.inf, until: float = math.inf) -> list[Record]:
        return [r for r in self.records if since <= r.started < until]

    def failures(self, since: float = -math.inf, until: float = math.inf) -> list[Record]:
        return [r for r in self.window(since, until) if r.status != 200]


def percentiles(records: list[Record]) -> str:
    """'n=…, p50 … ms, p99 … ms' for the successful requests among `records`."""
    seconds = [r.seconds for r in records if r.status == 200]
    if not seconds:
        return "n=0"
    p50, p99 = np.percentile(seconds, [50, 99]) * 1000
    return f"n={len(seconds)}, p50 {p50:.1f} ms, p99 {p99:.1f} ms"
