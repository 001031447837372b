"""Helpers every test layer shares (tests/ is on sys.path through tests/conftest.py: `from helpers import ...`).

Kept here once so that no test module carries its own copy: polling, request bodies, MNIST slices.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import orjson

from shared.dataset import Mnist

T = TypeVar("T")

V2_HEADER_LENGTH = "Inference-Header-Content-Length"


def eventually(condition: Callable[[], T], what: str = "condition", timeout: float = 30,
               interval: float = 0.1) -> float:
    """Poll `condition` until it returns something true; the seconds it took. An AssertionError naming `what`
    after `timeout` s. Exceptions of `condition` propagate: catch expected ones inside it."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        assert elapsed < timeout, f"no {what} after {timeout} s"
        time.sleep(interval)
    return time.monotonic() - started


def npy(array: np.ndarray) -> bytes:
    """`array` as the bytes of a .npy file (what `Content-Type: application/x-npy` bodies carry)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


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
