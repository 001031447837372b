"""ONNX export for the server, and the check that it computes what Keras computes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shared.preprocess import scale_pixels

if TYPE_CHECKING:
    import keras

PROBABILITY_TOLERANCE = 1e-4
CHECK_BATCH = 1000
PROJECT_ROOT = Path(__file__).resolve().parents[1]
EXPORT_ERROR_LINES = 5  # of the export process's stderr, in the error that stops the publish


class QualityGateError(RuntimeError):
    """The trained model must not be published; the message says why."""


def export_onnx(model: keras.Model, path: Path) -> None:
    model.export(str(path), format="onnx", verbose=False)


def export_saved_model(keras_path: Path, onnx_path: Path) -> None:
    """ONNX export of a saved `.keras` file under the TensorFlow backend, in a process of its own.

    For models trained under another backend (see trainer/export_onnx.py for why). Raises
    QualityGateError, with the end of the export's error output, when the export fails.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "trainer.export_onnx", str(keras_path), "--onnx", str(onnx_path)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-EXPORT_ERROR_LINES:])
        raise QualityGateError(f"ONNX export under the TensorFlow backend failed (exit {result.returncode}): {tail}")


def check_onnx_agrees(onnx_path: Path, images: np.ndarray, keras_probabilities: np.ndarray) -> float:
    """Run the exported model on `images`; returns the largest probability difference.

    Raises QualityGateError when any predicted label differs or a probability is off by
    more than PROBABILITY_TOLERANCE.
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    # In slices: all 10,000 test digits in one run held gigabytes of activations (the trainer's peak RSS).
    onnx_probabilities = np.concatenate([
        session.run(None, {input_name: scale_pixels(images[start:start + CHECK_BATCH])})[0]
        for start in range(0, len(images), CHECK_BATCH)
    ])
    disagreements = int((onnx_probabilities.argmax(axis=1) != keras_probabilities.argmax(axis=1)).sum())
    largest_difference = float(np.abs(onnx_probabilities - keras_probabilities).max())
    if disagreements:
        raise QualityGateError(f"ONNX export disagrees with Keras on {disagreements} of {len(images)} labels")
    if largest_difference > PROBABILITY_TOLERANCE:
        raise QualityGateError(
            f"ONNX export differs from Keras by {largest_difference:.2e} in a probability"
            f" (tolerance {PROBABILITY_TOLERANCE:.0e})"
        )
    return largest_difference
