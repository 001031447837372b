"""Adaptive batching: concurrent small predict calls merged into one model call.

Like TF Serving's batching parameters: `max_batch_size` images at most per merged call,
`timeout_micros` the longest the first request of a batch waits for company, `max_queue`
images at most waiting (beyond: a 503 with Retry-After, so overload sheds load at once
instead of growing every request's latency). One batch thread per process runs the merged
calls, each on a compute thread (server/compute.py); ONNX Runtime releases the GIL while it
computes, so the worker keeps reading and decoding other requests.

    batcher = Batcher(max_batch_size=64, timeout_micros=500, max_queue=1024)
    probabilities = batcher.submit(pixels, model.predict)   # (N, 28, 28) -> (N, 10)

Requests are merged only with requests for the same `run` (compared with ==, so bound
methods of one model object match): during a hot reload the old and new model form separate
batches, and the batcher needs no part in the model's life cycle. A request of
`max_batch_size` images or more gains nothing from company and runs in its own thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from server.compute import offload
from server.errors import Unavailable
from shared.config import Config

log = logging.getLogger(__name__)

Run = Callable[[np.ndarray], np.ndarray]
# (images in the merged call, requests in it, seconds each request waited in the queue)
Observer = Callable[[int, int, list[float]], None]
RETRY_AFTER_SECONDS = 1


class QueueFull(Unavailable):
    """Too many images already wait for the model: shed this request now (503 + Retry-After)."""


class BatcherClosed(Unavailable):
    """The process is shutting down and takes no new work."""


@dataclass(eq=False)
class _Pending:
    pixels: np.ndarray
    run: Run
    enqueued: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class Batcher:
    def __init__(self, max_batch_size: int, timeout_micros: int, max_queue: int,
                 observe: Observer | None = None) -> None:
        if max_batch_size < 1 or timeout_micros < 0 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1, timeout_micros at least 0")
        self.max_batch_size = max_batch_size
        self.timeout = timeout_micros / 1e6
        self.max_queue = max_queue
        self._observe = observe
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._closed = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="batcher", daemon=True)
        self._thread.start()

    def submit(self, pixels: np.ndarray, run: Run) -> np.ndarray:
        """`run(pixels)`, possibly as part of a larger call; its exception, if any, is raised here."""
        if len(pixels) >= self.max_batch_size:
            self._check_open()
            return offload(run, pixels)
        pending = _Pending(pixels, run)
        with self._changed:
            self._check_open()
            if self._queued_images + len(pixels) > self.max_queue:
                raise QueueFull(
                    f"server busy: {self._queued_images} images already wait for the model"
                    f" (BATCH_MAX_QUEUE={self.max_queue}); retry in {RETRY_AFTER_SECONDS} s",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
            self._queue.append(pending)
            self._queued_images += len(pixels)
            self._changed.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, finish what is queued, stop the batch thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise BatcherClosed("server is shutting down; retry on another instance",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for a first request, then up to `timeout` after its arrival for a full batch."""
        with self._changed:
            while not self._queue:
                if self._closed:
                    return None
                self._changed.wait()
            deadline = self._queue[0].enqueued + self.timeout
            while not self._closed and self._fitting_images() < self.max_batch_size:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._changed.wait(left)
            return self._take()

    def _fitting_images(self) -> int:
        run, total = self._queue[0].run, 0
        for pending in self._queue:
            if pending.run == run:
                total += len(pending.pixels)
        return total

    def _take(self) -> list[_Pending]:
        """The head request and the following ones for the same model that fit; others keep their place."""
        run = self._queue[0].run
        batch: list[_Pending] = []
        kept: deque[_Pending] = deque()
        size = 0
        while self._queue:
            pending = self._queue.popleft()
            if pending.run == run and size + len(pending.pixels) <= self.max_batch_size:
                batch.append(pending)
                size += len(pending.pixels)
            else:
                kept.append(pending)
        self._queue = kept
        self._queued_images -= size
        return batch

    def _run(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            pixels = batch[0].pixels if len(batch) == 1 else np.concatenate([p.pixels for p in batch])
            result = offload(batch[0].run, pixels)  # on a compute thread: the worker's loop keeps reading
            if len(result) != len(pixels):
                raise RuntimeError(f"model answered {len(result)} rows for {len(pixels)} images")
            offset = 0
            for pending in batch:
                pending.result = result[offset: offset + len(pending.pixels)]
                offset += len(pending.pixels)
        except BaseException as error:  # every caller of the merged call learns of its failure
            for pending in batch:
                pending.error = error
        finally:
            for pending in batch:
                pending.done.set()
        if self._observe is not None:
            try:
                self._observe(sum(len(p.pixels) for p in batch), len(batch), [started - p.enqueued for p in batch])
            except Exception:  # metrics must never stop the batch thread
                log.exception("batch observer failed")


def from_config(config: Config, observe: Observer | None = None) -> Batcher | None:
    """The batcher `shared.config.Config` asks for (BATCHING, BATCH_*), or None when batching is off."""
    if not config.batching:
        return None
    return Batcher(config.batch_max_size, config.batch_timeout_micros, config.batch_max_queue, observe)
