"""A hot reload builds its model off the worker's event loop (issue 23): under the gevent worker the reload
"thread" is a greenlet, and a load run on it stopped every connection of the worker (/healthz included) until
the model was built and warmed. Here a real gevent loop in the test process, a loader that waits until a
greenlet on that loop has run (the stand-in for a concurrent /healthz), and server.compute attached as in a
worker. Only behaviour is asserted: whether the loop ran while the load was in progress.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import StandInModel

from server import compute
from server.model_manager import ModelManager
from shared.config import Config

gevent = pytest.importorskip("gevent")


@pytest.fixture
def attached(monkeypatch) -> Iterator[None]:
    for name in ("_pool", "_load_pool", "_loop_thread", "_native_ident"):
        monkeypatch.setattr(compute, name, getattr(compute, name))  # restored after the test
    compute.attach(1)
    yield
    compute._load_pool.kill()


def test_a_reload_in_progress_leaves_the_event_loop_serving(standin_home: Path, attached) -> None:
    answered = threading.Event()  # not monkey-patched: the load waits for it on a real thread
    seen: list[bool] = []

    def gated_loader(_backend: str, _folder: Path, _threads: int) -> StandInModel:
        seen.append(answered.wait(10))  # without offloading, the loop is blocked here: nothing sets it
        return StandInModel()

    manager = ModelManager(Config(home=standin_home), gated_loader)
    reload = gevent.spawn(manager.poll)  # the reload greenlet, first in line
    gevent.spawn(answered.set).join()  # a request answered on the same loop meanwhile
    reload.join()
    assert seen == [True], "the loop answered nothing while the model was loading"
    assert manager.current is not None and manager.current.version == 2
