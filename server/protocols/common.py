"""What every wire format shares: the decoded request, the result, JSON, and pixel validation.

Pixels are MNIST's convention everywhere: 0..255, one image as 28x28, 784 or 28x28x1 values,
as `keras.datasets.mnist.load_data()` gives them. Every helper here either returns validated
(N, 28, 28) float32 pixels or raises `InputError` saying what was wrong, so a codec never
hands the data plane anything it has to check again (the data plane still checks the batch
limit and the model's answer).
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import io
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from server.errors import InputError
from shared.image import IMAGE_PIXELS, IMAGE_SHAPE, IMAGE_SIDE
from shared.preprocess import DecodeBudget, ImageError, image_to_mnist

IMAGE_SHAPES = (IMAGE_SHAPE, (IMAGE_PIXELS,), (*IMAGE_SHAPE, 1))
SHAPES_TEXT = f"{IMAGE_SIDE}x{IMAGE_SIDE}, {IMAGE_PIXELS} or {IMAGE_SIDE}x{IMAGE_SIDE}x1"
JSON_TYPE = "application/json"
# Numbers, numpy arrays and numpy scalars straight to JSON, without Python lists in between.
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_E_LOOKS = 64  # letters "e" looked behind before searching for true/false outright


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool = False  # v2 binary tensor data extension: raw bytes after the JSON header


@dataclass(frozen=True)
class InferRequest:
    """A decoded request, whatever its wire format."""

    pixels: np.ndarray  # (N, 28, 28) float32, validated 0..255
    version: int | None = None  # None: the served version
    outputs: tuple[RequestedOutput, ...] = ()  # what to answer (format-specific names)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    id: str | None = None
    form: str = ""  # format-specific variant of the answer (TF Serving: "predictions" or "outputs")


@dataclass(frozen=True)
class InferResult:
    version: int
    probabilities: np.ndarray  # (N, 10) float32, finite

    @property
    def labels(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)


Encoded = tuple[bytes, dict[str, str]]  # (body, headers) of an answer


def parse_json(body: bytes | memoryview, what: str = "body") -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:  # also invalid UTF-8 and nesting past 1024
        hint = ""
        if bytes(body[error.pos: error.pos + 9]).lstrip(b"-").startswith((b"NaN", b"Infinity")):
            hint = "; NaN and Infinity are not JSON numbers (nor pixel values)"
        raise InputError(f"{what} is not valid JSON ({error}{hint})") from None


def json_object(body: bytes | memoryview, required: tuple[str, ...] = (), what: str = "body") -> dict[str, Any]:
    value = parse_json(body, what)
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, got {type(value).__name__}")
    missing = [key for key in required if key not in value]
    if missing:
        raise InputError(f"{what} lacks {', '.join(repr(key) for key in missing)}")
    return value


def dump_json(value: Any) -> bytes:
    return orjson.dumps(value, option=_DUMP_OPTIONS)


def json_answer(value: Any) -> Encoded:
    return dump_json(value), {"Content-Type": JSON_TYPE}


def error_answer(message: str, headers: dict[str, str] | None = None, **extra: Any) -> Encoded:
    """Every error's body, `{"error": "<what was wrong>", ...}`, with its extra headers."""
    body, json_headers = json_answer({"error": message, **extra})
    return body, {**json_headers, **(headers or {})}


# -- turning request data into validated (N, 28, 28) float32 pixels ------------------------------

def check_batch_size(count: int, limit: int) -> None:
    """Called as soon as the count is known, before decoding anything heavy."""
    if count < 1:
        raise InputError("no images in the request")
    if count > limit:
        raise InputError(f"{count} images in one request; at most {limit} (MAX_BATCH_SIZE)")


_KIND_NAMES = {"b": "booleans", "U": "strings", "S": "bytes", "O": "non-numeric or mixed values",
               "f": "fractional numbers", "c": "complex numbers"}


def numeric_array(values: Any, what: str, integers_only: bool = False) -> np.ndarray:
    """Any nested list / array -> a numeric ndarray of pixel values 0..255, or InputError saying why not."""
    try:
        array = values if isinstance(values, np.ndarray) else np.asarray(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise InputError(f"{what}: not a rectangular array of numbers ({error})") from None
    kind = array.dtype.kind
    if kind not in "iuf" or (integers_only and kind == "f"):
        wanted = "integers" if integers_only else "numbers"
        raise InputError(f"{what}: pixel values must be {wanted} 0..255, found {_KIND_NAMES.get(kind, kind)}")
    if array.size == 0:
        raise InputError(f"{what}: empty array")
    if kind == "f" and not np.isfinite(array).all():
        raise InputError(f"{what}: NaN or infinite pixel values")
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise InputError(f"{what}: pixel values must be between 0 and 255, found {low} .. {high}")
    return array


def may_hold_booleans(text: bytes, end: int | None = None) -> bool:
    """Whether JSON text (up to `end`) holds true or false anywhere; if it does not, `byte_array` is safe on it.

    Both words end in "e", which a body of integers has only in its keys, so look behind each "e"
    (find jumps between them at memchr speed, far faster than searching for the words); past a few
    dozen, as with floats in exponent form, search for the words instead.
    """
    end = len(text) if end is None else end
    at = text.find(b"e", 0, end)
    for _ in range(_E_LOOKS):
        if at < 0:
            return False
        if text.endswith((b"tru", b"fals"), 0, at):
            return True
        at = text.find(b"e", at + 1, end)
    return text.find(b"true", 0, end) >= 0 or text.find(b"false", 0, end) >= 0


def byte_array(values: Any) -> np.ndarray | None:
    """A rectangular (nested) list of integers 0..255 -> uint8 array of its shape; None for anything else.

    `bytes()` checks every element in one C pass (much faster than `np.asarray`'s type inference, which
    walks the lists in Python objects): it refuses floats, strings, None, lists and values outside
    0..255, but takes booleans as 0 and 1, so use it only on JSON text without them (`may_hold_booleans`).
    """
    if not isinstance(values, list) or not values:
        return None
    shape, rows = [len(values)], values
    try:
        while isinstance(rows[0], list):
            lengths = set(map(len, rows))  # TypeError when some element has no length (a number)
            if len(lengths) != 1 or 0 in lengths:
                return None
            shape.append(lengths.pop())
            if not isinstance(rows[0][0], list):  # the last level: numbers straight into bytes()
                return np.frombuffer(bytes(chain.from_iterable(rows)), dtype=np.uint8).reshape(shape)
            rows = list(chain.from_iterable(rows))
        return np.frombuffer(bytes(rows), dtype=np.uint8)
    except (TypeError, ValueError):
        return None


def json_pixels(values: Any, what: str, text_has_booleans: bool, integers_only: bool = False) -> np.ndarray:
    """`numeric_array` for values parsed from JSON, through `byte_array` when the text cannot hold booleans."""
    array = None if text_has_booleans else byte_array(values)
    return numeric_array(values, what, integers_only) if array is None else array


def batch_of_images(array: np.ndarray, what: str) -> np.ndarray:
    """(N, 28, 28) / (N, 784) / (N, 28, 28, 1) -> (N, 28, 28) float32 (no copy when it already is)."""
    if array.ndim < 2 or array.shape[1:] not in IMAGE_SHAPES:
        raise InputError(f"{what}: expected N images of {SHAPES_TEXT} pixels, got shape {list(array.shape)}")
    return array.reshape(-1, *IMAGE_SHAPE).astype(np.float32, copy=False)


def one_image(array: np.ndarray, what: str) -> np.ndarray:
    if array.shape not in IMAGE_SHAPES:
        raise InputError(f"{what}: an image must be {SHAPES_TEXT} pixel values, got shape {list(array.shape)}")
    return array.reshape(IMAGE_SHAPE).astype(np.float32)


class ImageFound(Exception):  # a signal to the caller, not an error of the request
    """An image to decode inside `refusing_images()`: the caller decodes the request again where images may be."""


_REFUSING_IMAGES = contextvars.ContextVar("refusing_images", default=False)


@contextmanager
def refusing_images() -> Iterator[None]:
    """Decode where only work bounded by the body's size may run: an image raises ImageFound instead.

    Every image of every format is decoded by `image_bytes`, and only an image costs more than its bytes on the
    wire (a few hundred bytes may declare millions of pixels), so this one check bounds a decode by its body."""
    token = _REFUSING_IMAGES.set(True)
    try:
        yield
    finally:
        _REFUSING_IMAGES.reset(token)


def image_bytes(data: bytes, what: str, budget: DecodeBudget | None = None) -> np.ndarray:
    """PNG/JPEG/... bytes -> (28, 28) float32 through the documented MNIST-style preprocessing.

    `budget`: the request's decoded-bytes budget, shared by all its images (one DecodeBudget per request)."""
    if _REFUSING_IMAGES.get():
        raise ImageFound(what)
    try:
        return image_to_mnist(data, budget).astype(np.float32)
    except ImageError as error:
        raise InputError(f"{what}: {error}") from None


def b64_bytes(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InputError(f"{what}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{what}: b64 is not valid base64") from None


def b64_image(item: dict[str, Any], what: str, budget: DecodeBudget | None = None) -> np.ndarray:
    if set(item) != {"b64"} or not isinstance(item["b64"], str):
        raise InputError(f'{what}: an object instance must be {{"b64": "<base64-encoded PNG or JPEG>"}}')
    return image_bytes(b64_bytes(item["b64"], what), what, budget)


def instances(items: Any, field: str, max_batch_size: int, text_has_booleans: bool = True) -> np.ndarray:
    """A JSON list of instances (pixel arrays and/or {"b64": ...} images) -> (N, 28, 28) float32.

    `text_has_booleans`: what `may_hold_booleans` said of the JSON text (False allows the fast path)."""
    if not isinstance(items, list) or not items:
        raise InputError(f'"{field}" must be a non-empty list of images')
    check_batch_size(len(items), max_batch_size)
    if not any(isinstance(item, dict) for item in items):
        try:  # fast path: one conversion for the whole batch
            return batch_of_images(json_pixels(items, f'"{field}"', text_has_booleans), f'"{field}"')
        except InputError:
            pass  # find the first bad instance below, for a precise message
    images, budget = [], DecodeBudget()
    for index, item in enumerate(items):
        what = f'"{field}"[{index}]'
        if isinstance(item, dict):
            images.append(b64_image(item, what, budget))
        else:
            images.append(one_image(numeric_array(item, what), what))
    return np.stack(images)


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def npy_body(body: bytes, what: str = "application/x-npy body") -> np.ndarray:
    """A `.npy` file (never pickles) -> (N, 28, 28) float32."""
    stream = io.BytesIO(body)
    try:
        # The header first: a few bytes may declare 2^40 values, and np.load would allocate them before reading.
        version = np.lib.format.read_magic(stream)
        if version not in _NPY_HEADER_READERS:
            raise InputError(f"{what}: .npy format version {version} is not read here; save with numpy's default")
        shape, fortran_order, dtype = _NPY_HEADER_READERS[version](stream)
        declared = math.prod(shape) * dtype.itemsize
        if dtype.hasobject or declared != len(body) - stream.tell():
            raise InputError(f"{what}: its header declares {math.prod(shape)} values of {dtype} ({declared} bytes) "
                             f"but {len(body) - stream.tell()} bytes follow it")
        array = np.frombuffer(body, dtype=dtype, offset=stream.tell()).reshape(shape, order="F" if fortran_order
                                                                                else "C")
    except (ValueError, OSError, EOFError, TypeError) as error:
        raise InputError(f"{what}: not a readable .npy array ({error})") from None
    return batch_of_images(numeric_array(array, what), what)
