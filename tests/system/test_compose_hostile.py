"""The hostile-load bench part's compose twin (bench: `python -m bench.run --only hostile`, row compose-haproxy;
issue 23 item 5): docker-compose.yml at its defaults (one server replica of 2 workers, HAProxy in front), while
silent connections, byte-a-time headers, maximum-size bodies sent just above the body-rate floor and
decompression bombs go to the proxy's published port, every legit request through the proxy is answered, every
/readyz probe passes and neither a gunicorn worker nor the container restarts.

The stack is the bench's own (bench/lib/compose.py): its volume is seeded with the suite's trained model, so no
training runs in a container. Traffic goes to 127.0.0.1 only. Only behaviour is asserted, never a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.lib import compose
from bench.parts.hostile import legit_beside_mix


@pytest.fixture(scope="module")
def stack(trained_home: Path) -> Iterator[compose.Stack]:
    if reason := compose.docker_unavailable():
        pytest.skip(reason)
    with compose.running("mnist-hostile-test", trained_home / "mnist") as stack:
        yield stack


def test_legit_requests_through_haproxy_all_succeed_and_nothing_restarts_under_the_hostile_mix(
        stack: compose.Stack) -> None:
    workers = {worker.pid for worker in stack.workers()}
    assert len(workers) == 2, "docker-compose.yml's default is 2 workers per replica"
    restarts, boots = stack.restart_counts(), stack.worker_boots()
    round_ = legit_beside_mix(stack.url, stack.port)
    failed = [outcome for outcome in round_["legit"] if outcome != 200]
    assert round_["legit"] and not failed, (failed[:5], round_["mix"])
    assert round_["probes"] and set(round_["probes"]) == {200}, round_["probes"]
    assert round_["mix"]["slow_body"].get("408"), round_["mix"]  # the legit load ran through a whole slow-body cycle
    assert {worker.pid for worker in stack.workers()} == workers, "a gunicorn worker restarted under the mix"
    assert stack.worker_boots() == boots, stack.logs()[-4000:]
    assert stack.restart_counts() == restarts, "the server container restarted under the mix"
    assert round_["mix"]["bomb"].get("400"), round_["mix"]  # the bomb declaring a huge size was refused, and said so
