"""The Keras backend the trainer runs on, and the device it trains on.

Keras reads `KERAS_BACKEND` once, when it is first imported, so `select()` must run before
anything imports Keras (a process has one backend; the ONNX export of a model trained under
another backend therefore runs in its own process, see trainer/export_onnx.py).

On JAX, XLA compiles the training and evaluation steps on the first epoch; on a GPU that is
most of a short run (about 9 s of 13.5 s on an H200, issue 15). The compiled programs are kept
in a persistent cache on the volume, so the next run with the same shapes loads them instead.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

TENSORFLOW = "tensorflow"
JAX = "jax"
# Cache every compiled program, not only those that took over JAX's default of 1 s to compile:
# the small ones (evaluation, the epoch's last partial batch) add up on every run too.
JAX_CACHE_MIN_COMPILE_SECONDS = "0"


@dataclass(frozen=True)
class Device:
    """Where the model trains: `kind` is "cpu" or "gpu"."""

    kind: str
    name: str = ""
    compute_capability: tuple[int, int] | None = None

    def __str__(self) -> str:
        return f"gpu: {self.name}" if self.kind == "gpu" else "cpu"


def select(backend: str, jax_cache: Path | None = None) -> None:
    """Make `backend` the one Keras loads; `jax_cache` is the persistent compilation cache folder.

    Raises RuntimeError when Keras is already loaded with another backend (a bug in the caller).
    """
    if "keras" in sys.modules:
        loaded = sys.modules["keras"].backend.backend()
        if loaded != backend:
            raise RuntimeError(f"Keras is already loaded with the {loaded} backend, not {backend}")
    os.environ["KERAS_BACKEND"] = backend
    if backend == JAX and jax_cache is not None:
        # Environment, not jax.config: JAX reads these on import, and an operator's own value wins.
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(jax_cache))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", JAX_CACHE_MIN_COMPILE_SECONDS)


def _capability(text: str | None) -> tuple[int, int] | None:
    """"9.0" -> (9, 0); None when there is no (readable) capability."""
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def training_device() -> Device:
    """The first accelerator of the loaded Keras backend, or the CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == JAX:
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            return Device("gpu", device.device_kind, _capability(getattr(device, "compute_capability", None)))
    elif backend == TENSORFLOW:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return Device("gpu", details.get("device_name", gpus[0].name), details.get("compute_capability"))
    return Device("cpu")
