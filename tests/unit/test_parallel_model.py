"""ParallelModel: a big batch runs in parts at once on idle helper threads, with the answer the model gives whole."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from server.backends import RUN_SLICE
from server.parallel_model import MIN_PART, Helpers, ParallelModel


class RowModel:
    """Answers each row's first pixel, and notes the size and thread of each run."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.runs.append((len(batch), threading.current_thread().name))
        assert len(batch) > 0
        return batch.reshape(len(batch), -1)[:, :1].astype(np.float32)


def rows(count: int) -> np.ndarray:
    return np.arange(count, dtype=np.float32).repeat(4).reshape(count, 2, 2)


@pytest.mark.parametrize(("images", "helpers", "parts"),
                         [(256, 1, 2), (256, 3, 4), (100, 3, 3), (2 * MIN_PART - 1, 1, 1), (8, 3, 1)])
def test_parts_answer_what_the_whole_batch_does(images, helpers, parts) -> None:
    model = RowModel()
    answer = ParallelModel(model, Helpers(helpers)).predict(rows(images))
    assert answer.ravel().tolist() == list(range(images))  # every row once, in order
    assert len(model.runs) == parts
    assert sum(size for size, _ in model.runs) == images
    assert all(size % RUN_SLICE == 0 for size, _ in model.runs[:-1])  # parts of whole slices
    caller = threading.current_thread().name
    assert [thread for _, thread in model.runs].count(caller) == 1  # one part here, the others on helpers


def test_a_busy_helper_is_not_waited_for() -> None:
    model, helpers = RowModel(), Helpers(1)
    assert helpers.take(1) == 1  # another call's part holds the one helper
    ParallelModel(model, helpers).predict(rows(256))
    assert model.runs == [(256, threading.current_thread().name)]  # whole, on the caller's thread
    helpers.free(1)
    model.runs.clear()
    ParallelModel(model, helpers).predict(rows(256))
    assert len(model.runs) == 2 and helpers.take(1) == 1  # the helper was freed after its part
