"""server/batching.py in-process, with a stand-in model: merging, splitting, limits, errors, shutdown."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest
from helpers import eventually

from server.batching import Batcher, BatcherClosed, QueueFull, from_config
from server.errors import Unavailable

LONG_MICROS = 10_000_000  # a batch waits for company "forever" unless it fills up


class StandIn:
    """A model whose answer row i is the image's first pixel (so rows can be traced back); records calls."""

    def __init__(self, gate: threading.Event | None = None, error: Exception | None = None) -> None:
        self.calls: list[int] = []
        self.gate = gate
        self.error = error
        self.entered = threading.Event()

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        self.calls.append(len(pixels))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.error is not None:
            raise self.error
        return np.repeat(pixels[:, :1, 0], 10, axis=1)


def images(first: float, count: int) -> np.ndarray:
    pixels = np.zeros((count, 28, 28), dtype=np.float32)
    pixels[:, 0, 0] = first + np.arange(count)
    return pixels


def in_threads(calls: list[Callable[[], object]]) -> list[object]:
    results: list[object] = [None] * len(calls)

    def call(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as error:  # the test looks at what each caller got
            results[index] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
    return results


def occupied(max_batch_size: int, max_queue: int) -> tuple[Batcher, StandIn, threading.Thread]:
    """A batcher whose thread is held by a gated stand-in (open `model.gate`), so the next requests queue up."""
    model = StandIn(threading.Event())
    batcher = Batcher(max_batch_size=max_batch_size, timeout_micros=0, max_queue=max_queue)
    busy = threading.Thread(target=batcher.submit, args=(images(0, 1), model.predict))
    busy.start()
    assert model.entered.wait(5)
    return batcher, model, busy


def queue_up(batcher: Batcher, calls: list[Callable[[], object]], images_waiting: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    eventually(lambda: batcher._queued_images >= images_waiting, f"{images_waiting} images queued", timeout=10,
               interval=0.001)
    return threads


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows() -> None:
    model = StandIn()
    batcher = Batcher(max_batch_size=8, timeout_micros=LONG_MICROS, max_queue=64)
    sizes = [1, 3, 2, 2]  # 8 images: the batch is full, so nobody waits for the timeout
    results = in_threads([lambda i=i, n=n: batcher.submit(images(100 * i, n), model.predict)
                          for i, n in enumerate(sizes)])
    assert model.calls == [8]
    for i, (n, result) in enumerate(zip(sizes, results, strict=True)):
        assert isinstance(result, np.ndarray)
        assert result.shape == (n, 10)
        assert result[:, 0].tolist() == (100 * i + np.arange(n)).tolist()
    batcher.close()


def test_max_batch_size_is_respected() -> None:
    batcher, model, first = occupied(max_batch_size=4, max_queue=64)
    results: list[np.ndarray] = []
    rest = queue_up(batcher, [lambda i=i: results.append(batcher.submit(images(10 * i, 3), model.predict))
                              for i in range(3)], 9)
    assert model.gate is not None
    model.gate.set()
    for thread in [first, *rest]:
        thread.join(5)
    assert model.calls[0] == 1
    assert max(model.calls) <= 4
    assert sum(model.calls) == 10
    assert len(results) == 3
    batcher.close()


def test_the_timeout_bounds_the_wait_for_company() -> None:
    model = StandIn()
    batcher = Batcher(max_batch_size=64, timeout_micros=1000, max_queue=64)
    result = batcher.submit(images(7, 2), model.predict)  # alone: runs once the 1 ms is over
    assert result[:, 0].tolist() == [7, 8]
    assert model.calls == [2]
    batcher.close()


def test_large_requests_run_alone_in_the_callers_thread() -> None:
    batcher = Batcher(max_batch_size=4, timeout_micros=LONG_MICROS, max_queue=8)
    callers: list[str] = []
    result = batcher.submit(images(0, 16), lambda x: callers.append(threading.current_thread().name) or x[:, 0])
    assert len(result) == 16
    assert callers == [threading.current_thread().name]
    batcher.close()


def test_a_full_queue_answers_503_with_retry_after() -> None:
    batcher, model, busy = occupied(max_batch_size=2, max_queue=3)
    queued = queue_up(batcher, [lambda: batcher.submit(images(0, 1), model.predict) for _ in range(3)], 3)
    with pytest.raises(QueueFull) as refused:
        batcher.submit(images(0, 1), model.predict)
    assert isinstance(refused.value, Unavailable) and refused.value.status == 503
    assert refused.value.headers["Retry-After"] == "1"
    assert "BATCH_MAX_QUEUE=3" in refused.value.message
    assert model.gate is not None
    model.gate.set()
    for thread in [busy, *queued]:
        thread.join(5)
    assert sum(model.calls) == 4
    batcher.close()


def test_an_exception_reaches_every_caller_of_the_merged_call() -> None:
    model = StandIn(error=ValueError("model broke"))
    batcher = Batcher(max_batch_size=3, timeout_micros=LONG_MICROS, max_queue=64)
    results = in_threads([lambda: batcher.submit(images(0, 1), model.predict) for _ in range(3)])
    assert model.calls == [3]
    assert all(isinstance(result, ValueError) and str(result) == "model broke" for result in results)
    assert batcher.submit(images(0, 3), StandIn().predict).shape == (3, 10)  # the batch thread lives on
    batcher.close()


def test_a_wrong_number_of_rows_is_an_error_not_a_misassignment() -> None:
    batcher = Batcher(max_batch_size=2, timeout_micros=LONG_MICROS, max_queue=64)

    def one_row(pixels: np.ndarray) -> np.ndarray:
        return pixels[:1, 0]

    results = in_threads([lambda: batcher.submit(images(0, 1), one_row) for _ in range(2)])
    assert all(isinstance(result, RuntimeError) and "1 rows for 2 images" in str(result) for result in results)
    batcher.close()


def test_requests_for_different_models_are_never_merged() -> None:
    old, new = StandIn(), StandIn()
    batcher = Batcher(max_batch_size=4, timeout_micros=20_000, max_queue=64)
    runs = [old.predict, new.predict, old.predict, new.predict]
    results = in_threads([lambda run=run: batcher.submit(images(0, 1), run) for run in runs])
    assert sum(old.calls) == 2 and sum(new.calls) == 2
    assert all(isinstance(result, np.ndarray) for result in results)
    batcher.close()


def test_the_observer_sees_batch_sizes_and_queue_waits() -> None:
    seen: list[tuple[int, int, list[float]]] = []
    batcher = Batcher(max_batch_size=4, timeout_micros=LONG_MICROS, max_queue=64,
                      observe=lambda images_, requests, waits: seen.append((images_, requests, waits)))
    model = StandIn()
    in_threads([lambda: batcher.submit(images(0, 2), model.predict) for _ in range(2)])
    batcher.close()
    assert [entry[:2] for entry in seen] == [(4, 2)]  # 4 images from 2 requests in one call
    assert len(seen[0][2]) == 2 and all(wait >= 0 for wait in seen[0][2])


def test_close_finishes_queued_work_then_refuses_new_work() -> None:
    model = StandIn()
    batcher = Batcher(max_batch_size=64, timeout_micros=LONG_MICROS, max_queue=64)
    result: list[np.ndarray] = []
    [waiting] = queue_up(batcher, [lambda: result.append(batcher.submit(images(5, 1), model.predict))], 1)
    batcher.close()  # does not wait out the 10 s timeout: closing flushes the queue
    waiting.join(5)
    assert result[0][:, 0].tolist() == [5]
    assert not batcher._thread.is_alive()
    with pytest.raises(BatcherClosed):
        batcher.submit(images(0, 1), model.predict)
    with pytest.raises(BatcherClosed):
        batcher.submit(images(0, 100), model.predict)


@pytest.mark.parametrize("arguments", [(0, 0, 1), (1, -1, 1), (1, 0, 0)])
def test_bad_settings_are_refused(arguments: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        Batcher(*arguments)


def test_from_config_follows_the_settings() -> None:
    from shared.config import Config

    assert from_config(Config.from_env({})) is None  # off by default
    batcher = from_config(Config.from_env({"BATCHING": "true", "BATCH_MAX_SIZE": "8", "BATCH_TIMEOUT_MICROS": "250",
                                           "BATCH_MAX_QUEUE": "99"}))
    assert batcher is not None
    assert (batcher.max_batch_size, batcher.timeout, batcher.max_queue) == (8, 0.00025, 99)
    batcher.close()


def test_the_data_plane_merges_concurrent_requests_when_batching_is_on(standin_home) -> None:
    from conftest import StandInModel, standin_digit

    from server.dataplane import DataPlane
    from server.model_manager import ModelManager
    from server.protocols.common import InferRequest
    from shared.config import Config

    class Recording(StandInModel):
        def __init__(self) -> None:
            self.calls: list[int] = []

        def predict(self, batch: np.ndarray) -> np.ndarray:
            self.calls.append(len(batch))
            return super().predict(batch)

    model = Recording()
    config = Config(home=standin_home, max_batch_size=64, batching=True, batch_max_size=4,
                    batch_timeout_micros=LONG_MICROS)
    manager = ModelManager(config, lambda _b, _f, _t: model)
    manager.poll()
    batcher = from_config(config)
    plane = DataPlane(manager, config.max_batch_size, batcher)
    model.calls.clear()  # the warm-up's calls
    labels = [3, 1, 4, 1]
    results = in_threads([lambda label=label: plane.infer(InferRequest(standin_digit(label)[None].astype(np.float32)))
                          for label in labels])
    assert model.calls == [4]  # one merged call for the four requests
    assert [result.labels.tolist() for result in results] == [[label] for label in labels]
    assert batcher is not None
    batcher.close()
