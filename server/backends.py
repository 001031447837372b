"""Model runtimes: ONNX Runtime over `model.onnx` (default) or Keras over `model.keras`.

Both take the model's input convention, (N, 28, 28, 1) float32 in 0..1, and return (N, 10)
float32 softmax probabilities. TensorFlow is imported only inside `KerasModel`, so an ONNX
server never loads it (a test checks the worker's memory maps).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from server.sliced_model import SLICES_INPUT, sliced_model
from shared.model_store import KERAS_FILE, ONNX_FILE


class Model(Protocol):
    def predict(self, batch: np.ndarray) -> np.ndarray: ...


# Images per step of the model's Scan (server/sliced_model.py). With the memory arena on, a big batch run whole is
# faster than with it off (where each call's activations are fresh mmap'd pages), but the arena grows with the
# largest batch seen. Run in slices of 8, a slice's activations stay in the CPU's caches, so it is faster still and
# the arena stays small; larger slices land in between on both counts. Figures: bench/results.md, "ONNX Runtime
# session settings" (bench/parts/ort.py).
RUN_SLICE = 8


class OnnxModel:
    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        self._session = onnxruntime.InferenceSession(str(path), options, providers=providers)
        self._input = self._session.get_inputs()[0].name
        # Whole slices in one call with the GIL released throughout; the rest (under RUN_SLICE images) plainly.
        self._sliced = onnxruntime.InferenceSession(sliced_model(path, RUN_SLICE), options, providers=providers)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        # InferenceSession.run is thread-safe, so gunicorn's threads share the sessions.
        whole = len(batch) - len(batch) % RUN_SLICE
        if whole == 0:
            return self._run_plain(batch)
        slices = np.ascontiguousarray(batch[:whole]).reshape(whole // RUN_SLICE, RUN_SLICE, *batch.shape[1:])
        answer = self._sliced.run(None, {SLICES_INPUT: slices})[0].reshape(whole, -1)
        if whole < len(batch):
            answer = np.concatenate([answer, self._run_plain(batch[whole:])])
        return answer.astype(np.float32, copy=False)

    def _run_plain(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._session.run(None, {self._input: batch})[0], dtype=np.float32)


_tf_threads_set = False


class KerasModel:
    def __init__(self, path: Path, threads: int) -> None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        global _tf_threads_set
        if not _tf_threads_set:
            try:  # only possible before TensorFlow's first op in this process
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                pass
            _tf_threads_set = True
        import keras

        self._model = keras.saving.load_model(str(path), compile=False)
        # Eager Keras calls from several threads at once are not documented as safe: serialise them.
        self._lock = threading.Lock()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self._model(batch, training=False), dtype=np.float32)


def load_model(backend: str, version_dir: Path, threads: int) -> Model:
    """Load the version's file for `backend` ("onnx" or "keras")."""
    if backend == "keras":
        return KerasModel(version_dir / KERAS_FILE, threads)
    return OnnxModel(version_dir / ONNX_FILE, threads)
