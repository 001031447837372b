"""The hostile-load bench part's twin (bench: `python -m bench.run --only hostile`, issue 23): while silent
connections, byte-a-time headers, maximum-size bodies sent just above the body-rate floor and decompression
bombs run against a 2-worker server at the defaults, every legit request is answered and no worker restarts.

With a thread per connection (gunicorn's gthread worker, THREADS=1) the two slow bodies alone held both
workers' only threads, and every legit request waited behind them. Only behaviour is asserted, never a time.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import pytest
import requests
from helpers import eventually

from bench.parts.hostile import MIX, Hostile, v2_json
from server.body import MIN_BYTES_PER_SECOND
from shared.config import Config

LEGIT_CLIENTS = 4
LEGIT_REQUESTS = 25  # per client, one after another on a keep-alive session
PATH = "/v2/models/mnist/infer"


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server):
    live = start_module_server(trained_home, WEB_CONCURRENCY="2", THREADS="1")
    eventually(lambda: live.log().count("serving model version") >= 2, "2 workers serving a model", timeout=60,
               detail=live.log)
    return live


def workers(server) -> set[int]:
    return {child.pid for child in psutil.Process(server.process.pid).children()}


def test_legit_requests_all_succeed_and_no_worker_restarts_under_the_hostile_mix(server) -> None:
    before = workers(server)
    hostile = Hostile(server.port, Config.from_env().max_body_bytes, MIN_BYTES_PER_SECOND)
    hostile.start()
    body = v2_json(pixels=[0] * 784)
    outcomes: list[object] = []

    def legit() -> None:
        with requests.Session() as session:
            for _ in range(LEGIT_REQUESTS):
                try:
                    answer = session.post(server.url + PATH, data=body, timeout=60,
                                          headers={"Content-Type": "application/json"})
                    outcomes.append(answer.status_code)
                except requests.RequestException as error:
                    outcomes.append(error)

    try:
        # Let the hostile clients take their places first (the slow bodies are sending, the silent ones wait).
        eventually(lambda: sum(n for counts in hostile.counts.values() for n in counts.values()) >= MIX["bomb"],
                   "a first bomb answered", timeout=60)
        clients = [threading.Thread(target=legit) for _ in range(LEGIT_CLIENTS)]
        for client in clients:
            client.start()
        probes = [requests.get(server.url + "/readyz", timeout=30).status_code for _ in range(5)]
        for client in clients:
            client.join()
    finally:
        counts = hostile.stop()
    failed = [outcome for outcome in outcomes if outcome != 200]
    assert not failed and len(outcomes) == LEGIT_CLIENTS * LEGIT_REQUESTS, (failed[:5], counts)
    assert probes == [200] * 5
    assert workers(server) == before, "a worker restarted (killed for time or memory) under the hostile mix"
    assert counts["bomb"].get("400"), counts  # the bomb declaring a huge size was refused, and said so
