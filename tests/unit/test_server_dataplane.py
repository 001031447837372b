"""The data plane in-process over ModelManager's `loader` seam: model lookup, batch limit, NaN check, metrics,
and the sample routes' predictions going through it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import StandInModel, standin_digits
from helpers import eventually
from prometheus_client import REGISTRY

from server.batching import Batcher, QueueFull
from server.dataplane import DataPlane
from server.errors import InputError, NotFound, Unavailable
from server.model_manager import ModelManager
from server.protocols.common import InferRequest
from server.samples import SampleStore
from shared.config import Config


class NanFor255(StandInModel):
    """Fine on the warm-up's zeros, NaN once an image holds a full-white pixel."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        answer = super().predict(batch)
        answer[batch.reshape(len(batch), -1).max(axis=1) >= 1] = np.nan
        return answer


class Counting(StandInModel):
    def __init__(self) -> None:
        self.images = 0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.images += len(batch)
        return super().predict(batch)


class Held(StandInModel):
    """Once `hold` is set (after the warm-up), blocks each model call until `release`; `entered`: one is running."""

    def __init__(self) -> None:
        self.hold, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.hold.is_set():
            self.entered.set()
            self.release.wait(10)
        return super().predict(batch)


def plane_over(home: Path, model: StandInModel, max_batch: int = 8, batcher: Batcher | None = None) -> DataPlane:
    manager = ModelManager(Config(home=home, max_batch_size=max_batch), lambda _b, _f, _t: model)
    manager.poll()
    return DataPlane(manager, max_batch, batcher)


def pixels(*labels: int) -> np.ndarray:
    return standin_digits(*labels).astype(np.float32)


def batch_count() -> float:
    return REGISTRY.get_sample_value("mnist_inference_batch_size_count") or 0.0


def test_infer_uses_the_served_or_the_requested_version(standin_home: Path) -> None:
    plane = plane_over(standin_home, StandInModel())
    served = plane.infer(InferRequest(pixels(3, 7)))
    assert served.version == 2 and served.labels.tolist() == [3, 7]
    assert served.probabilities.dtype == np.float32 and served.probabilities.shape == (2, 10)
    assert plane.infer(InferRequest(pixels(5), version=1)).version == 1
    with pytest.raises(NotFound, match="version 9"):
        plane.infer(InferRequest(pixels(5), version=9))


def test_batch_limit_and_the_batch_metric(standin_home: Path) -> None:
    plane = plane_over(standin_home, StandInModel(), max_batch=4)
    with pytest.raises(InputError, match="at most 4"):
        plane.infer(InferRequest(pixels(*range(5))))
    before = batch_count()
    plane.infer(InferRequest(pixels(1, 2, 3)))
    assert batch_count() == before + 1


def test_no_model_is_503_with_the_reason(tmp_path: Path) -> None:
    plane = plane_over(tmp_path, StandInModel())
    with pytest.raises(Unavailable, match="no model"):
        plane.infer(InferRequest(pixels(1)))


def test_a_model_answering_nan_is_503_never_nan_json(standin_home: Path) -> None:
    plane = plane_over(standin_home, NanFor255())
    assert plane.infer(InferRequest(pixels(0))).labels.tolist() == [0]
    with pytest.raises(Unavailable, match="NaN"):
        plane.infer(InferRequest(pixels(4)))


def test_sample_predictions_go_through_the_data_plane(standin_home: Path) -> None:
    model = Counting()
    plane = plane_over(standin_home, model)
    samples = SampleStore(standin_home / "datasets" / "mnist.npz")
    before, warmed = batch_count(), model.images
    labels, confidences = samples.predictions(plane, plane.model(), "test", 10, 20)
    assert len(labels) == 10 and np.allclose(confidences, 0.91)
    assert batch_count() == before + 1 and model.images - warmed == 1000  # one cached chunk of 1,000
    samples.predictions(plane, plane.model(), "test", 20, 30)
    assert model.images - warmed == 1000, "the chunk's answers are cached per model version"


def test_a_full_batching_queue_is_503_and_counted(standin_home: Path) -> None:
    model = Held()
    batcher = Batcher(max_batch_size=8, timeout_micros=0, max_queue=2)
    plane = plane_over(standin_home, model, batcher=batcher)
    model.hold.set()
    answers: list = []
    running = threading.Thread(target=lambda: answers.append(plane.infer(InferRequest(pixels(1)))))
    running.start()
    assert model.entered.wait(10)  # the batch thread holds the first request in the model
    waiting = threading.Thread(target=lambda: answers.append(plane.infer(InferRequest(pixels(2, 3)))))
    waiting.start()
    eventually(lambda: batcher._queued_images == 2, "two images queued", timeout=10)
    refused = REGISTRY.get_sample_value("mnist_batching_queue_full_total") or 0.0
    try:
        with pytest.raises(QueueFull, match="BATCH_MAX_QUEUE=2") as raised:
            plane.infer(InferRequest(pixels(4)))
        assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "1"}
        assert REGISTRY.get_sample_value("mnist_batching_queue_full_total") == refused + 1
    finally:
        model.release.set()
        running.join(10)
        waiting.join(10)
        batcher.close()
    assert sorted(answer.labels.tolist() for answer in answers) == [[1], [2, 3]]
    assert REGISTRY.get_sample_value("mnist_batching_queue_full_total") == refused + 1  # the others were not
