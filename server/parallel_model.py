"""A model whose big batches run in parts on several cores at once: the gRPC process's big calls.

The gRPC server is one process (docs/grpc.md), and its model session has INFERENCE_THREADS intra-op threads
(1 as compose runs it, so that the process's threads, not ONNX Runtime's spinning ones, share the cores). One
call of 256 images would then run on one core while the others idle. `ParallelModel` splits such a batch into
parts of whole RUN_SLICE slices and runs them at once: one on the calling thread, the others on helper
threads, one per further CPU of the process. A part goes to a helper only when that helper is idle: under
several big calls at once each runs on its own thread as it would unwrapped, never queued behind another
call's parts. Sessions are thread-safe, and ONNX Runtime releases the GIL while it computes.

    model = ParallelModel(load_model("onnx", folder, 1), helpers)   # helpers = Helpers(cpus - 1)
    model.predict(batch)                                            # (N, 28, 28, 1) -> (N, 10), as the model's
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from server.backends import RUN_SLICE, Model
from server.model_manager import Loader

# The smallest part worth a hand-off to another thread (a few ms of one core against tens of microseconds).
MIN_PART = 4 * RUN_SLICE


class Helpers:
    """`count` helper threads shared by every loaded version; `take` claims the idle ones without waiting."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._idle = threading.Semaphore(count)
        self._pool = ThreadPoolExecutor(count, thread_name_prefix="model-part") if count else None

    def take(self, wanted: int) -> int:
        taken = 0
        while taken < wanted and self._idle.acquire(blocking=False):
            taken += 1
        return taken

    def free(self, count: int) -> None:
        for _ in range(count):
            self._idle.release()

    def run(self, model: Model, part: np.ndarray) -> Future[np.ndarray]:
        """`model.predict(part)` on a helper claimed by `take`, which it frees when done."""
        assert self._pool is not None

        def run() -> np.ndarray:
            try:
                return model.predict(part)
            finally:
                self._idle.release()

        return self._pool.submit(run)


def cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ParallelModel:
    def __init__(self, model: Model, helpers: Helpers) -> None:
        self.model, self.helpers = model, helpers

    def predict(self, batch: np.ndarray) -> np.ndarray:
        others = self.helpers.take(min(len(batch) // MIN_PART - 1, self.helpers.count))
        if others == 0:
            return self.model.predict(batch)
        step = -(-len(batch) // (others + 1))  # ceil(images / parts), then up to whole slices
        step = -(-step // RUN_SLICE) * RUN_SLICE
        starts = range(step, len(batch), step)
        self.helpers.free(others - len(starts))  # rounding up to slices may leave fewer parts
        pending = [self.helpers.run(self.model, batch[start:start + step]) for start in starts]
        first = self.model.predict(batch[:step])
        return np.concatenate([first, *(future.result() for future in pending)])


def parallel_loader(loader: Loader, helpers: Helpers) -> Loader:
    """`loader`, its models wrapped in ParallelModel when there are helpers."""
    if helpers.count == 0:
        return loader

    def load(backend: str, folder: Path, threads: int) -> Model:
        return ParallelModel(loader(backend, folder, threads), helpers)

    return load
