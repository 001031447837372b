"""What runs on a gevent worker's event loop and what goes to a thread (issue 23).

A hot reload builds its model off the loop: under the gevent worker the reload "thread" is a greenlet, and a
load run on it stopped every connection of the worker (/healthz included) until the model was built and warmed.
Small model runs and small bodies without images stay on the loop, where a hand-off would cost more than the
work, and wait for the loop's other connections first; images and big bodies go to a compute thread. Here a
real gevent loop in the test process and server.compute attached as in a worker. Only behaviour is asserted:
which thread ran what, and in which order the loop served its greenlets.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
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
    runs on the loop (bench/results.md, "Inline model runs and decoding"); a bigger batch must not hold the loop."""
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


def _record_where(monkeypatch, owner, name: str) -> list[bool]:
    """Replace `owner.name` with a wrapper that notes, for each call, whether it ran on the loop."""
    on_loop: list[bool] = []
    call = getattr(owner, name)

    def recorded(*args):
        on_loop.append(compute.on_loop())
        return call(*args)

    monkeypatch.setattr(owner, name, recorded)
    return on_loop


def _thread_of_each_decode(monkeypatch, codec_name: str, body: bytes, headers: dict[str, str]) -> list[bool]:
    """Decode `body` through the pipeline from a greenlet: for each codec.decode call, whether it ran on the loop."""
    from server import pipeline

    codec = pipeline.CODECS[codec_name]
    on_loop = _record_where(monkeypatch, codec, "decode")
    environ = {pipeline._environ_key(name): value for name, value in headers.items()}
    gevent.spawn(pipeline.decode, codec, body, pipeline.WsgiHeaders(environ), None, 1024).get()
    return on_loop


def test_a_small_numeric_body_is_decoded_on_the_loop(monkeypatch, attached) -> None:
    from conftest import standin_digits

    from server.pipeline import INLINE_BODY_BYTES

    body = orjson.dumps({"inputs": [{"name": "images", "shape": [1, 28, 28], "datatype": "UINT8",
                                     "data": standin_digits(3).ravel().tolist()}]})
    assert len(body) <= INLINE_BODY_BYTES
    assert _thread_of_each_decode(monkeypatch, "v2", body, {}) == [True]


def test_a_big_body_is_decoded_on_a_compute_thread(monkeypatch, attached) -> None:
    from conftest import standin_digits

    from server.pipeline import INLINE_BODY_BYTES

    body = orjson.dumps({"instances": standin_digits(*[1] * 64).tolist()})
    assert len(body) > INLINE_BODY_BYTES
    assert _thread_of_each_decode(monkeypatch, "native", body, {"Content-Type": "application/json"}) == [False]


@pytest.mark.parametrize("codec_name", ["native", "tfserving", "v2"])
def test_an_image_in_a_small_body_is_decoded_on_a_compute_thread(monkeypatch, attached, codec_name) -> None:
    """An image costs what it declares, not its bytes: however small the body, its image leaves the loop."""
    from conftest import standin_digit
    from helpers import png_b64

    from server.protocols import common

    png = png_b64(standin_digit(5))
    body = {"native": {"instances": [{"b64": png}]}, "tfserving": {"instances": [{"b64": png}]},
            "v2": {"inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [png]}],
                   "parameters": {"binary_data_output": False}}}[codec_name]
    images_on_loop = _record_where(monkeypatch, common, "image_to_mnist")
    decoded = _thread_of_each_decode(monkeypatch, codec_name, orjson.dumps(body),
                                     {"Content-Type": "application/json"})
    assert decoded == [True, False], "first tried on the loop, then decoded again on a compute thread"
    assert images_on_loop == [False]


def test_decoding_on_the_loop_waits_for_the_loops_other_greenlets(monkeypatch, attached) -> None:
    """A request decoded on the loop never blocks on I/O: it first lets every other ready greenlet run, or one
    keep-alive client could keep the loop while the worker's other connections wait."""
    from server import pipeline

    order: list[str] = []

    class Recording:
        def decode(self, *_args):
            order.append("decode")

    requests = [gevent.spawn(pipeline.decode, Recording(), b"{}", pipeline.WsgiHeaders({}), None, 1)]
    requests.append(gevent.spawn(order.append, "another connection"))
    gevent.joinall(requests, raise_error=True)
    assert order == ["another connection", "decode"]
