"""Fit a model recipe (trainer/model.py), with one readable log line per epoch when not on a terminal.

Every step runs on batches of one shape: under JAX (and TensorFlow's graphs) each new input shape
is another program to trace and compile, and 60,000 / 128 and 10,000 / 128 would leave a last
batch of 96 and of 16 (on a GPU, compiling is most of a short run: issue 27). So the data is
padded to whole batches, the padding weighing 0 in the loss and the metrics (`pad_to_batches`),
and the test set is evaluated in batches of EVALUATION_BATCH, padded the same way: no image is
dropped and none counted twice. Three programs remain: the training step, the validation step
and the prediction of the published model (Keras compiles `fit`'s test step and `predict`
separately, and the published model is a float32 twin, see `train`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from shared.dataset import NUM_CLASSES, Mnist
from shared.logs import emit
from shared.preprocess import scale_pixels
from trainer import distributed
from trainer.distributed import Job
from trainer.model import IMPROVED, SEED, build_model
from trainer.precision import FLOAT32
from trainer.resume import Backup

EVALUATION_BATCH = 1000  # test images per step: one shape, one compile; divides the 10,000


@dataclass
class TrainingRun:
    model: keras.Model  # float32, whatever precision it was trained in
    history: list[dict[str, float]]  # one entry per epoch
    seconds: float
    train_images: int
    recipe: str = SEED


def pad_to_batches(batch: int, *arrays: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """`arrays` (same length) padded with zeros to a whole number of `batch`-sized batches, and
    the sample weights: 1 for every real row, 0 for the padding."""
    rows = len(arrays[0])
    padding = -rows % batch
    padded = [np.concatenate([array, np.zeros((padding, *array.shape[1:]), array.dtype)]) for array in arrays]
    weights = np.concatenate([np.ones(rows, np.float32), np.zeros(padding, np.float32)])
    return padded, weights


class EpochTimer(keras.callbacks.Callback):
    """Records per-epoch metrics and seconds; prints them as one line when `print_lines`."""

    def __init__(self, epochs: int, print_lines: bool) -> None:
        super().__init__()
        self.epochs = epochs
        self.print_lines = print_lines
        self.history: list[dict[str, float]] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        entry = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._started, 2)}
        entry.update({key: round(float(value), 5) for key, value in logs.items()})
        self.history.append(entry)
        if self.print_lines:
            emit(
                f"epoch {epoch + 1}/{self.epochs}: loss {entry.get('loss', float('nan')):.4f}"
                f" accuracy {entry.get('accuracy', float('nan')):.4f}"
                f" val_accuracy {entry.get('val_accuracy', float('nan')):.4f}"
                f" ({entry['seconds']:.1f} s)",
                epochs=self.epochs, **entry,
            )


def train(
    data: Mnist, epochs: int, batch_size: int, seed: int, train_subset: int = 0, precision: str = FLOAT32,
    backup: Backup | None = None, job: Job | None = None, recipe: str = SEED,
) -> TrainingRun:
    """Fit the `recipe`'s model in `precision` (a Keras dtype policy, see trainer/precision.py).

    With a `backup`, an interrupted run with the same settings resumes where it stopped (trainer/resume.py).
    In a multi-process `job` (trainer/distributed.py, already joined) this process fits its shard of
    every global batch of `batch_size`, and every process returns the same model.
    """
    job = job or Job()
    keras.utils.set_random_seed(seed)
    x_train, y_train = data.x_train, data.y_train
    if train_subset:
        x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    x_train, y_train = job.shard(x_train, y_train)
    x_test, y_test = job.shard(scale_pixels(data.x_test), keras.utils.to_categorical(data.y_test, NUM_CLASSES))
    local_batch = job.local_batch(batch_size)
    (x_fit, y_fit), weights = pad_to_batches(
        local_batch, scale_pixels(x_train), keras.utils.to_categorical(y_train, NUM_CLASSES))
    evaluation_batch = math.ceil(EVALUATION_BATCH / job.processes)
    (x_test, y_test), test_weights = pad_to_batches(evaluation_batch, x_test, y_test)
    total_steps = epochs * len(x_fit) // local_batch  # the improved recipe's learning-rate schedule spans them

    model = build_model(precision, recipe, total_steps)
    on_terminal = sys.stdout.isatty() and not job.distributed  # one bar per process would interleave
    timer = EpochTimer(epochs, print_lines=not on_terminal)
    callbacks: list[keras.callbacks.Callback] = [timer]  # first: the backup saves the history it just recorded
    if backup is not None:
        backup.prepare(epochs)
        callbacks.append(backup.callback(epochs, timer.history))
    if job.distributed:
        callbacks.append(distributed.Watchdog(job))
        with distributed.peers_guard(job):
            distributed.barrier("backup checked")  # no process may restore a backup process 0 just removed
    started = time.perf_counter()
    with distributed.peers_guard(job):
        model.fit(
            x_fit,
            y_fit,
            sample_weight=weights,
            batch_size=local_batch,
            epochs=epochs,
            verbose=1 if on_terminal else 0,
            validation_data=(x_test, y_test, test_weights),
            validation_batch_size=evaluation_batch,
            callbacks=callbacks,
        )
        seconds = round(time.perf_counter() - started, 2)
        if job.distributed:
            model = distributed.leave(model, lambda: build_model(precision, recipe, total_steps))
            checksum = distributed.weights_checksum(model.get_weights())
            print(f"trainer: process {job.index} of {job.processes} trained weights checksum {checksum}", flush=True)
    if precision != FLOAT32 or recipe == IMPROVED:
        # Publish a float32 model: the ONNX export, the server and its clients all expect
        # float32, and float32 inference of these (float32) weights loses nothing. The improved
        # recipe's twin also leaves out the augmentation layer, which only trains.
        trained, model = model, build_model(FLOAT32, recipe, total_steps, False)
        model.set_weights(trained.get_weights())
        model.optimizer = trained.optimizer  # its state (float32, like the weights) is saved with the model
    return TrainingRun(model, timer.history, seconds, len(x_train) * job.processes, recipe)


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Test loss and accuracy, per-class accuracy and the confusion matrix (rows: true label)."""
    # One pass over the test set: the loss and accuracy come from the predicted probabilities, so JAX
    # compiles one program for it (model.evaluate and model.predict are two) and CPUs run it once.
    # In whole batches, the padding cut off again: one program for any number of images.
    (padded,), _ = pad_to_batches(EVALUATION_BATCH, scale_pixels(images))
    probabilities = model.predict(padded, batch_size=EVALUATION_BATCH, verbose=0)[:len(images)]
    loss = float(keras.ops.mean(keras.losses.categorical_crossentropy(
        keras.utils.to_categorical(labels, NUM_CLASSES), probabilities)))
    predicted = probabilities.argmax(axis=1)
    accuracy = float((predicted == labels).mean())
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(confusion, (labels.astype(int), predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "test_loss": round(float(loss), 5),
        "test_accuracy": round(float(accuracy), 5),
        "per_class_accuracy": [round(float(value), 5) for value in per_class],
        "confusion_matrix": confusion.tolist(),
        "probabilities": probabilities,
    }
