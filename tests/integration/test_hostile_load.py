"""The hostile-load bench part's twin (bench: `python -m bench.run --only hostile`, issue 23): while silent
connections, byte-a-time headers, maximum-size bodies sent just above the body-rate floor and decompression
bombs run against a 2-worker server at the defaults, every legit request is answered and no worker restarts.

With a thread per connection (gunicorn's gthread worker, THREADS=1) the two slow bodies alone held both
workers' only threads, and every legit request waited behind them. Only behaviour is asserted, never a time.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from helpers import eventually

from bench.parts.hostile import legit_beside_mix


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
    round_ = legit_beside_mix(server.url, server.port)
    failed = [outcome for outcome in round_["legit"] if outcome != 200]
    assert round_["legit"] and not failed, (failed[:5], round_["mix"])
    assert round_["probes"] and set(round_["probes"]) == {200}, round_["probes"]
    assert round_["mix"]["slow_body"].get("408"), round_["mix"]  # the legit load ran through a whole slow-body cycle
    assert workers(server) == before, "a worker restarted (killed for time or memory) under the hostile mix"
    assert round_["mix"]["bomb"].get("400"), round_["mix"]  # the bomb declaring a huge size was refused, and said so
