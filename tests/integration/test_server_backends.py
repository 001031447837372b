"""MODEL_BACKEND=keras serves the same answers as the default ONNX Runtime backend.

TensorFlow is not fork-safe, so in keras mode the model must load in each worker after the
fork: the gunicorn master must never map TensorFlow, the worker must.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import requests
from helpers import npy

from shared import dataset

COUNT = 300


def _probabilities(server, images: np.ndarray) -> tuple[int, np.ndarray]:
    response = requests.post(server.url + "/predict", data=npy(images),
                             headers={"Content-Type": "application/x-npy"}, timeout=60)
    assert response.status_code == 200, response.text[:300]
    body = response.json()
    return body["model_version"], np.array([p["probabilities"] for p in body["predictions"]])


def _maps_tensorflow(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def test_keras_and_onnx_backends_agree_on_real_digits(trained_home: Path, start_server) -> None:
    data = dataset.load(trained_home / "datasets" / "mnist.npz")
    images, labels = data.x_test[:COUNT], data.y_test[:COUNT]
    keras_server = start_server(trained_home, MODEL_BACKEND="keras", WEB_CONCURRENCY="1", THREADS="2")
    onnx_server = start_server(trained_home, WEB_CONCURRENCY="1")
    keras_version, keras_probabilities = _probabilities(keras_server, images)
    onnx_version, onnx_probabilities = _probabilities(onnx_server, images)
    assert keras_version == onnx_version == 1
    assert (keras_probabilities.argmax(axis=1) == onnx_probabilities.argmax(axis=1)).all()
    np.testing.assert_allclose(keras_probabilities, onnx_probabilities, atol=1e-4)
    assert (keras_probabilities.argmax(axis=1) == labels).mean() > 0.8
    assert requests.get(keras_server.url + "/models", timeout=5).json()["backend"] == "keras"
    assert requests.get(keras_server.url + "/v2/models/mnist", timeout=5).json()["platform"] == "tensorflow_keras"

    master = keras_server.process.pid
    (worker,) = (int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split())
    assert not _maps_tensorflow(master), "TensorFlow was loaded in the gunicorn master (not fork-safe)"
    assert _maps_tensorflow(worker), "the keras worker should run TensorFlow"
