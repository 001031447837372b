"""The data plane: everything between a decoded request and its result, for every wire format.

    codec.decode(body) -> InferRequest -> DataPlane.infer -> InferResult -> codec.encode -> body

It owns model lookup (the served version, or a requested one loaded on demand), what
routes say about models without loading them (readiness, versions, failures, store metadata:
a GET never loads a model, only inference does), the batch limit, the batch-size metric,
scaling pixels to the model's input, and the check that the model answered finite numbers.
The sample routes go through it too (`DataPlane.run`), so nothing calls a model except `_run`.

The seam for adaptive batching is `_run(model, pixels)`: it receives one validated batch
(N, 28, 28) float32 of pixel values 0..255 for one loaded model and returns its (N, 10)
probabilities. A batcher (server.batching) plugs in there: merge calls that share a model,
run them once, hand each caller its rows. Everything else (validation, NaN check, metrics)
stays per request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from server import metrics, tracing
from server.batching import Batcher, QueueFull
from server.compute import offload
from server.errors import NotFound, Unavailable
from server.model_manager import LoadedModel, ModelManager
from server.protocols.common import InferRequest, InferResult, check_batch_size
from shared.model_store import ModelStoreError
from shared.preprocess import scale_pixels

# A model call of this many images or fewer runs on the worker's loop: it takes about as much CPU as handing it
# to a compute thread and back, which would only add its cost and latency (bench/results.md, "Inline model
# runs and decoding"). Bigger batches go to a compute thread (server/compute.py), so the loop keeps reading connections.
INLINE_IMAGES = 8


class DataPlane:
    def __init__(self, manager: ModelManager, max_batch_size: int, batcher: Batcher | None = None) -> None:
        self.manager = manager
        self.max_batch_size = max_batch_size
        self.batcher = batcher  # BATCHING: concurrent calls on one model merged (server.batching)

    def model(self, version: int | None = None) -> LoadedModel:
        """The served model (503 with the reason before one is loaded) or a requested version (404 if unknown)."""
        return self.manager.get(version)

    @property
    def current(self) -> LoadedModel | None:
        """The served model, or None before one is loaded (never waits, never raises)."""
        return self.manager.current

    def ready(self, **extra: Any) -> LoadedModel:
        """The served model, or 503 with the reason (and `extra` JSON fields, such as ready=False)."""
        current = self.manager.current
        if current is None:
            raise Unavailable(self.manager.not_ready_reason(), ready=False, **extra)
        return current

    def versions(self) -> list[int]:
        return self.manager.store.versions()

    def failed(self) -> dict[int, str]:
        """Versions that failed to load, with why."""
        return {failure["version"]: failure["error"] for failure in self.manager.failures()}

    def failures(self) -> list[dict[str, Any]]:
        return self.manager.failures()

    def stored_metadata(self, version: int) -> dict[str, Any]:
        """A version's metadata.json from the store ({} when unreadable), without loading its model."""
        try:
            return self.manager.store.metadata(version)
        except ModelStoreError:
            return {}

    def known_version(self, version: int | None) -> int:
        """The version a status or metadata GET is about, checked against the store without loading it:
        the served one (503 before one is), or a numbered one (404 when the store lacks it).

        Loading on a GET would let anyone walk the versions and load model after model (two stay cached),
        queueing predictions behind the loads; a version is loaded only to run inference on it."""
        if version is None:
            return self.ready().version
        current = self.manager.current
        if current is not None and current.version == version:
            return version
        if not self.manager.store.has_version(version):
            raise NotFound(f"model version {version} not found; versions in the store: {self.versions()}")
        return version

    def infer(self, request: InferRequest) -> InferResult:
        """A decoded request -> probabilities from the served (or the requested) model version."""
        check_batch_size(len(request.pixels), self.max_batch_size)
        model = self.model(request.version)  # held for the whole request: a hot swap cannot change it midway
        return self.run(model, request.pixels)

    def run(self, model: LoadedModel, pixels: np.ndarray) -> InferResult:
        """Validated (N, 28, 28) pixels through one given model (the sample routes hold theirs)."""
        metrics.BATCH_SIZE.observe(len(pixels))
        probabilities = self._run(model, pixels)
        if not np.isfinite(probabilities).all():  # the warm-up checks zeros only; never send NaN as JSON
            raise Unavailable(f"model version {model.version} answered NaN or infinite values for this input")
        return InferResult(model.version, probabilities)

    def _run(self, model: LoadedModel, pixels: np.ndarray) -> np.ndarray:
        """The batcher's seam: (N, 28, 28) float32 0..255 -> (N, 10) float32 probabilities."""
        scaled = scale_pixels(pixels)
        if self.batcher is not None:
            with tracing.span("queue and batch", model_version=model.version, batch_size=len(pixels)):
                try:
                    return self.batcher.submit(scaled, model.model.predict)
                except QueueFull:
                    metrics.QUEUE_FULL.inc()  # the alert's own signal: a 503 alone may have other causes
                    raise
        with tracing.span("model run", model_version=model.version, batch_size=len(pixels)):
            if len(scaled) <= INLINE_IMAGES:
                return model.model.predict(scaled)
            return offload(model.model.predict, scaled)
