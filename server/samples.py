"""The MNIST images the sample routes show, and the served model's predictions for them.

The dataset is the trainer's cache in the shared volume, read-only: the server never
downloads. It is loaded on first use (and tried again on later requests while missing,
so a server started before the trainer picks it up). Predictions are computed in chunks
and cached per model version, so paging or scanning for mistakes costs one pass per split.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from server.errors import NotFound, Unavailable
from server.inference import InputError
from server.model_manager import LoadedModel
from shared import dataset
from shared.dataset import SPLITS, DatasetError, Mnist

CHUNK = 1000


class SampleStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._data: Mnist | None = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, str, int], tuple[np.ndarray, np.ndarray]] = {}
        self._cache_version: int | None = None

    def data(self) -> Mnist:
        if self._data is None:
            with self._lock:
                if self._data is None:
                    try:
                        self._data = dataset.load(self.path)
                    except DatasetError as error:
                        raise Unavailable(f"sample images are not available: {error}") from None
        return self._data

    def split(self, name: str, in_path: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of a split; an unknown name is 404 in a URL path, 400 in a query."""
        if name not in SPLITS:
            error = NotFound if in_path else InputError
            raise error(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return self.data().split(name)

    def predictions(self, model: LoadedModel, split: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Predicted labels and their probabilities for images start..stop-1 of a split."""
        if self._cache_version != model.version:
            self._cache = {}  # another model: old answers are stale
            self._cache_version = model.version
        images, _labels = self.split(split)
        labels, confidences = [], []
        for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1):
            key = (model.version, split, chunk)
            if key not in self._cache:
                probabilities = model.predict(images[chunk * CHUNK: (chunk + 1) * CHUNK])
                self._cache[key] = (probabilities.argmax(axis=1), probabilities.max(axis=1))
            labels.append(self._cache[key][0])
            confidences.append(self._cache[key][1])
        offset = (start // CHUNK) * CHUNK
        return (np.concatenate(labels)[start - offset: stop - offset],
                np.concatenate(confidences)[start - offset: stop - offset])
