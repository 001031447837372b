"""wrk, the load generator: one run of one prepared body, and its figures as the reports name them.

bench/lib/post.lua POSTs the body over and over and prints one JSON line; one wrk thread keeps the
connections busy and leaves the cores to the server under test.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "post.lua"


@dataclass(frozen=True)
class Body:
    """A request body on disk, its Content-Type, and at most one extra "Name: value" header."""

    path: Path
    content_type: str
    header: str = ""

    def headers(self) -> dict[str, str]:
        """Content-Type and the extra header, for urllib."""
        found = {"Content-Type": self.content_type}
        if self.header:
            name, value = self.header.split(": ", 1)
            found[name] = value
        return found


def wrk(url: str, body: Body, connections: int, seconds: int) -> dict[str, Any]:
    """One wrk run against `url`: post.lua's raw figures (requests, duration_us, p50_us, p99_us, errors)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(LUA), url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True,
                            env={**os.environ, "BENCH_BODY": str(body.path), "BENCH_CONTENT_TYPE": body.content_type,
                                 "BENCH_HEADER": body.header}).stdout
    return json.loads(output.strip().splitlines()[-1])


def errors(raw: dict[str, Any]) -> int:
    return raw["socket_errors"] + raw["timeouts"] + raw["non_2xx"]


def requests_per_second(raw: dict[str, Any]) -> float:
    return raw["requests"] / (raw["duration_us"] / 1e6)


def figures(raw: dict[str, Any], size: int) -> dict[str, Any]:
    """One wrk run as the figures the reports use (`size` images per request)."""
    per_second = requests_per_second(raw)
    return {"requests_per_second": round(per_second, 1), "images_per_second": round(per_second * size, 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p99_ms": round(raw["p99_us"] / 1000, 2),
            "errors": errors(raw)}
