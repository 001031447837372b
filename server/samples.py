"""The MNIST images the sample routes show, and the served model's predictions for them.

The dataset is the trainer's cache in the shared volume, read-only: the server never
downloads. It is loaded on first use (and tried again on later requests while missing,
so a server started before the trainer picks it up). Predictions are computed in chunks
and cached per model version, so paging or scanning for mistakes costs one pass per split.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from server.errors import InputError, NotFound, Unavailable
from server.model_manager import LoadedModel
from shared import dataset
from shared.dataset import SPLITS, DatasetError, Mnist

if TYPE_CHECKING:
    from server.dataplane import DataPlane

CHUNK = 1000


class SampleStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._data: Mnist | None = None
        self._lock = threading.Lock()
        # {model version: {(split, chunk): (labels, top probabilities)}}, for the newest version asked only
        self._cache: dict[int, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]] = {}

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

    def predictions(self, plane: DataPlane, model: LoadedModel, split: str, start: int,
                    stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Predicted labels and their probabilities for images start..stop-1 of a split, by `model`."""
        images, _labels = self.split(split)
        cache = self._cache.get(model.version)
        if cache is None:  # another model: the old answers are stale (one atomic replace, no shared mutation)
            cache = {}
            self._cache = {model.version: cache}
        labels, confidences = [], []
        for chunk in range(start // CHUNK, (stop - 1) // CHUNK + 1):
            key = (split, chunk)
            entry = cache.get(key)
            if entry is None:
                pixels = images[chunk * CHUNK: (chunk + 1) * CHUNK].astype(np.float32)
                probabilities = plane.run(model, pixels).probabilities
                entry = cache[key] = (probabilities.argmax(axis=1), probabilities.max(axis=1))
            labels.append(entry[0])
            confidences.append(entry[1])
        offset = (start // CHUNK) * CHUNK
        return (np.concatenate(labels)[start - offset: stop - offset],
                np.concatenate(confidences)[start - offset: stop - offset])

    def page(self, plane: DataPlane, model: LoadedModel | None, split: str, offset: int, limit: int,
             wrong_only: bool) -> dict[str, Any]:
        """The /samples answer: up to `limit` samples from `offset` on (only mispredicted ones with `wrong_only`,
        scanning forward), with `model`'s predictions when there is a model."""
        _images, labels = self.split(split)
        total = len(labels)
        entries: list[dict[str, Any]] = []
        position = offset
        while position < total and len(entries) < limit:
            stop = min(total, position + (limit if not wrong_only else CHUNK))
            if model is None:
                entries += [_entry(split, i, int(labels[i]), None, None) for i in range(position, stop)]
                position = stop
                continue
            predicted, probability = self.predictions(plane, model, split, position, stop)
            for i in range(position, stop):
                guess = int(predicted[i - position])
                if wrong_only and guess == labels[i]:
                    continue
                entries.append(_entry(split, i, int(labels[i]), guess, float(probability[i - position])))
                if len(entries) == limit:
                    stop = i + 1
                    break
            position = stop
        return {"split": split, "offset": offset, "limit": limit, "total": total,
                "model_version": model.version if model else None, "samples": entries,
                "next_offset": position if position < total else None}


def _entry(split: str, index: int, label: int, predicted: int | None, probability: float | None) -> dict[str, Any]:
    return {"index": index, "label": label, "predicted": predicted, "probability": probability,
            "image_url": f"/samples/{split}/{index}.png", "pixels_url": f"/samples/{split}/{index}.json"}
