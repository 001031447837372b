"""The data plane: everything between a decoded request and its result, for every wire format.

    codec.decode(body) -> InferRequest -> DataPlane.infer -> InferResult -> codec.encode -> body

It owns model lookup (the served version, or a requested one loaded on demand), the batch
limit, the batch-size metric, scaling pixels to the model's input, and the check that the
model answered finite numbers. The sample routes go through it too (`DataPlane.run`), so
nothing calls a model except `_run`.

The seam for adaptive batching is `_run(model, pixels)`: it receives one validated batch
(N, 28, 28) float32 of pixel values 0..255 for one loaded model and returns its (N, 10)
probabilities. A batcher (server.batching) plugs in there: merge calls that share a model,
run them once, hand each caller its rows. Everything else (validation, NaN check, metrics)
stays per request.
"""

from __future__ import annotations

import numpy as np

from server import metrics
from server.batching import Batcher
from server.errors import Unavailable
from server.model_manager import LoadedModel, ModelManager
from server.protocols.common import InferRequest, InferResult, check_batch_size
from shared.preprocess import scale_pixels


class DataPlane:
    def __init__(self, manager: ModelManager, max_batch_size: int, batcher: Batcher | None = None) -> None:
        self.manager = manager
        self.max_batch_size = max_batch_size
        self.batcher = batcher  # BATCHING: concurrent calls on one model merged (server.batching)

    def model(self, version: int | None = None) -> LoadedModel:
        """The served model (503 with the reason before one is loaded) or a requested version (404 if unknown)."""
        return self.manager.get(version)

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
            return self.batcher.submit(scaled, model.model.predict)
        return model.model.predict(scaled)
