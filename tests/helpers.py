"""Helpers every test layer shares (tests/ is on sys.path through tests/conftest.py: `from helpers import ...`).

Kept here once so that no test module carries its own copy: polling, request bodies, MNIST slices.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
from PIL import Image

from shared.dataset import Mnist
from shared.preprocess import mnist_to_png

T = TypeVar("T")

V2_HEADER_LENGTH = "Inference-Header-Content-Length"


def eventually(condition: Callable[[], T], what: str = "condition", timeout: float = 30,
               interval: float = 0.1, detail: Callable[[], str] | None = None) -> float:
    """Poll `condition` until it returns something true; the seconds it took. An AssertionError naming `what`
    (and `detail()`, e.g. a process's log) after `timeout` s. Exceptions of `condition` propagate: catch expected
    ones inside it, raise from it to stop waiting early (a process that exited will never become ready)."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        if elapsed >= timeout:
            raise AssertionError(f"no {what} after {timeout} s" + (f":\n{detail()}" if detail else ""))
        time.sleep(interval)
    return time.monotonic() - started


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    """`array` as the bytes of a .npy file (what `Content-Type: application/x-npy` bodies carry)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    """`image` saved as `image_format` ("PNG", "JPEG", ...) with Pillow's `options`, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_b64(image: np.ndarray, scale: int = 3) -> str:
    """A 28x28 uint8 digit as base64 PNG text, upscaled `scale` times (what JSON bodies carry as `b64`)."""
    return base64.b64encode(mnist_to_png(image, scale)).decode()


def v2_binary(images: np.ndarray, binary_out: bool = True, request_id: str = "b1") -> tuple[bytes, dict[str, str]]:
    """An Open Inference Protocol v2 binary-tensor request for uint8 `images`: (body, headers)."""
    header = orjson.dumps({"id": request_id,
                           "inputs": [{"name": "pixels", "shape": list(images.shape), "datatype": "UINT8",
                                       "parameters": {"binary_data_size": images.nbytes}}],
                           "parameters": {"binary_data_output": binary_out}})
    return header + images.tobytes(), {V2_HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


def v2_binary_tensor(tensor: dict, raw: bytes) -> dict:
    """A v2 binary body from a hand-written tensor header and raw bytes, as `requests` keyword arguments
    (for hostile bodies whose header and data need not agree)."""
    header = orjson.dumps({"inputs": [tensor]})
    return {"data": header + raw, "headers": {V2_HEADER_LENGTH: str(len(header))}}


def tiny_mnist(mnist_npz: Path, images: int) -> Mnist:
    """The first `images` rows of each split of the real MNIST: enough to fit a model in seconds."""
    with np.load(mnist_npz) as archive:
        return Mnist(*(archive[key][:images] for key in ("x_train", "y_train", "x_test", "y_test")))


def first_test_digits(mnist_npz: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` test digits and their labels."""
    with np.load(mnist_npz) as archive:
        return archive["x_test"][:count], archive["y_test"][:count]
