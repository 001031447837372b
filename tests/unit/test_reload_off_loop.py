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


class WhereRun(StandInModel):
    """Records on which OS thread each model call ran, and of how many images."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def predict(self, batch):
        self.calls.append((len(batch), compute._native_ident()))
        return super().predict(batch)


def test_small_model_runs_stay_on_the_loop_and_bigger_ones_go_to_a_compute_thread(standin_home: Path,
                                                                                     attached) -> None:
    """A run of at most INLINE_IMAGES images is shorter than the hand-off to a compute thread and back, so it
    runs on the loop (bench/results.md, "Inline model runs"); a bigger batch must not hold the loop."""
    from conftest import standin_digits

    from server.dataplane import INLINE_IMAGES, DataPlane
    from server.protocols.common import InferRequest

    model = WhereRun()
    manager = ModelManager(Config(home=standin_home), lambda _backend, _folder, _threads: model)
    manager.poll()
    plane = DataPlane(manager, 1024)
    model.calls.clear()  # the warm-up's
    for images in (1, INLINE_IMAGES, INLINE_IMAGES + 1, 256):
        batch = standin_digits(*[7] * images).astype("float32")
        gevent.spawn(plane.infer, InferRequest(batch)).get()
    loop = compute._loop_thread
    assert [(images, thread == loop) for images, thread in model.calls] == [
        (1, True), (INLINE_IMAGES, True), (INLINE_IMAGES + 1, False), (256, False)]
