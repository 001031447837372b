"""The one inference core: validate -> batch -> model -> result.

Every wire format (native /predict, TF Serving :predict, KServe v2 infer) turns its body
into pixel arrays with the helpers here and calls `Inference.predict`; only the shape of
the answer differs. Pixels are MNIST's convention everywhere: 0..255, one image as 28x28,
784 or 28x28x1 values, as `keras.datasets.mnist.load_data()` gives them.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from server import metrics
from server.errors import ApiError, Unavailable
from server.model_manager import ModelManager
from shared.preprocess import ImageError, image_to_mnist

IMAGE_SHAPES = ((28, 28), (784,), (28, 28, 1))
_SHAPES_TEXT = "28x28, 784 or 28x28x1"


class InputError(ApiError):
    status = 400


@dataclass(frozen=True)
class Result:
    version: int
    probabilities: np.ndarray  # (N, 10) float32

    @property
    def labels(self) -> list[int]:
        return [int(label) for label in self.probabilities.argmax(axis=1)]

    def rows(self) -> list[list[float]]:
        return self.probabilities.astype(float).tolist()


class Inference:
    def __init__(self, manager: ModelManager, max_batch_size: int) -> None:
        self.manager = manager
        self.max_batch_size = max_batch_size

    def predict(self, pixels: np.ndarray, version: int | None = None) -> Result:
        """(N, 28, 28) validated pixels -> probabilities from the served (or the requested) model version."""
        check_batch_size(len(pixels), self.max_batch_size)
        model = self.manager.get(version)  # held for the whole request: a hot swap cannot change it midway
        metrics.BATCH_SIZE.observe(len(pixels))
        probabilities = model.predict(pixels)
        if not np.isfinite(probabilities).all():  # the warm-up checks zeros only; never send NaN as JSON
            raise Unavailable(f"model version {model.version} answered NaN or infinite values for this input")
        return Result(model.version, probabilities)


# -- turning request data into validated (N, 28, 28) float32 pixels ------------------------------

def check_batch_size(count: int, limit: int) -> None:
    """Called by each wire format as soon as it knows the count, before decoding anything heavy."""
    if count < 1:
        raise InputError("no images in the request")
    if count > limit:
        raise InputError(f"{count} images in one request; at most {limit} (MAX_BATCH_SIZE)")


def numeric_array(values: Any, what: str, integers_only: bool = False) -> np.ndarray:
    """Any nested list / array -> a numeric ndarray of pixel values 0..255, or InputError saying why not."""
    try:
        array = values if isinstance(values, np.ndarray) else np.asarray(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise InputError(f"{what}: not a rectangular array of numbers ({error})") from None
    kind = array.dtype.kind
    if kind not in "iuf" or (integers_only and kind == "f"):
        wanted = "integers" if integers_only else "numbers"
        found = {"b": "booleans", "U": "strings", "S": "bytes", "O": "non-numeric or mixed values"}.get(kind, kind)
        if kind == "f":
            found = "fractional numbers"
        raise InputError(f"{what}: pixel values must be {wanted} 0..255, found {found}")
    if array.size == 0:
        raise InputError(f"{what}: empty array")
    if kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{what}: NaN or infinite pixel values")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise InputError(f"{what}: pixel values must be between 0 and 255, found {low} .. {high}")
    return array


def batch_of_images(array: np.ndarray, what: str) -> np.ndarray:
    """(N, 28, 28) / (N, 784) / (N, 28, 28, 1) -> (N, 28, 28) float32."""
    if array.ndim < 2 or array.shape[1:] not in IMAGE_SHAPES:
        raise InputError(f"{what}: expected N images of {_SHAPES_TEXT} pixels, got shape {list(array.shape)}")
    return array.reshape(-1, 28, 28).astype(np.float32)


def one_image(array: np.ndarray, what: str) -> np.ndarray:
    if array.shape not in IMAGE_SHAPES:
        raise InputError(f"{what}: an image must be {_SHAPES_TEXT} pixel values, got shape {list(array.shape)}")
    return array.reshape(28, 28).astype(np.float32)


def image_bytes(data: bytes, what: str) -> np.ndarray:
    """PNG/JPEG/... bytes -> (28, 28) float32 through the documented MNIST-style preprocessing."""
    try:
        return image_to_mnist(data).astype(np.float32)
    except ImageError as error:
        raise InputError(f"{what}: {error}") from None


def _b64_image(item: dict[str, Any], what: str) -> np.ndarray:
    if set(item) != {"b64"} or not isinstance(item["b64"], str):
        raise InputError(f'{what}: an object instance must be {{"b64": "<base64-encoded PNG or JPEG>"}}')
    try:
        data = base64.b64decode(item["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what}: b64 is not valid base64") from None
    return image_bytes(data, what)


def instances(items: Any, field: str, max_batch_size: int) -> np.ndarray:
    """A JSON list of instances (pixel arrays and/or {"b64": ...} images) -> (N, 28, 28) float32."""
    if not isinstance(items, list) or not items:
        raise InputError(f'"{field}" must be a non-empty list of images')
    check_batch_size(len(items), max_batch_size)
    if not any(isinstance(item, dict) for item in items):
        try:  # fast path: one numpy conversion for the whole batch
            return batch_of_images(numeric_array(items, f'"{field}"'), f'"{field}"')
        except InputError:
            pass  # find the first bad instance below, for a precise message
    images = []
    for index, item in enumerate(items):
        what = f'"{field}"[{index}]'
        if isinstance(item, dict):
            images.append(_b64_image(item, what))
        else:
            images.append(one_image(numeric_array(item, what), what))
    return np.stack(images)


def npy_body(body: bytes, what: str = "application/x-npy body") -> np.ndarray:
    """A `.npy` file (never pickles) -> (N, 28, 28) float32."""
    try:
        array = np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as error:
        raise InputError(f"{what}: not a readable .npy array ({error})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"{what}: expected one .npy array, not an archive")
    return batch_of_images(numeric_array(array, what), what)
