"""Open Inference Protocol v2 (KServe v2, Triton's HTTP API) with the binary tensor data extension.

A request is a JSON object `{"id"?, "parameters"?, "inputs": [...], "outputs"?: [...]}`. Each
input tensor has `name`, `datatype`, `shape` and either `data` (JSON, flat or nested) or
`parameters.binary_data_size`: then its bytes follow the JSON in the body, in input order,
and the `Inference-Header-Content-Length` header says where the JSON ends (what tritonclient
and KServe's InferenceRESTClient send by default). Binary numbers are little-endian, row-major;
BYTES elements are each a 4-byte little-endian length and then the bytes.

- Numeric datatypes (UINT8..UINT64, INT8..INT64, FP16, FP32, FP64) hold pixel values 0..255,
  shape [N, 28, 28], [N, 784] or [N, 28, 28, 1].
- BYTES holds encoded images (PNG, JPEG, ...), one element per image, shape [N] or [N, 1];
  in JSON each element is a base64 string (or `{"b64": ...}`). They are made MNIST-like
  exactly as images sent to /predict are.
- Several inputs are joined, in order, into one batch (this model has one input, `pixels`;
  a client may send, say, photos as BYTES and pixel arrays as UINT8 in one request).

Outputs: `probabilities` (FP32 [N, 10]) and `label` (INT64 [N]); all of them unless `outputs`
names some. An output is answered as binary data when its `parameters.binary_data` is true,
or, by default, when the request's `parameters.binary_data_output` is true; the answer then
carries `Inference-Header-Content-Length` too. `id` is echoed; other parameters are accepted
and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from server.errors import InputError
from server.protocols.common import (
    JSON_TYPE,
    Encoded,
    InferRequest,
    InferResult,
    RequestedOutput,
    b64_bytes,
    b64_image,
    batch_of_images,
    check_batch_size,
    dump_json,
    image_bytes,
    json_object,
    json_pixels,
    may_hold_booleans,
    numeric_array,
)
from shared.config import MODEL_NAME
from shared.image import IMAGE_SIDE
from shared.preprocess import DecodeBudget

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_TYPE = "application/octet-stream"
SERVER_NAME = "mnist-server"
SERVER_VERSION = "1.0.0"
EXTENSIONS = ("binary_tensor_data",)
INPUT_NAME = "pixels"
# Little-endian, as the extension specifies, whatever the machine.
NUMERIC = {"UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
           "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
           "FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
BYTES = "BYTES"
DATATYPES = (*NUMERIC, BYTES)
OUTPUTS = {"probabilities": ("FP32", "<f4"), "label": ("INT64", "<i8")}
LENGTH_PREFIX = 4  # bytes before each BYTES element in binary form
_MAX_HEADER_DIGITS = 18


def _header_split(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview | None]:
    """(JSON part, binary part or None when the request has no Inference-Header-Content-Length)."""
    view = memoryview(body)
    if header_length is None:
        return view, None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_HEADER_DIGITS:  # '²'.isdigit() is true
        raise InputError(f"{HEADER_LENGTH} must be a non-negative integer, got {header_length[:40]!r}")
    length = int(text)
    if length > len(body):
        raise InputError(f"{HEADER_LENGTH} is {length} but the body has only {len(body)} bytes")
    return view[:length], view[length:]


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _Tensor:
    """One input's header, checked before any data is decoded."""

    def __init__(self, tensor: Any, index: int) -> None:
        if not isinstance(tensor, dict):
            raise InputError(f"input {index} must be an object with name, shape, datatype and data")
        missing = [key for key in ("name", "shape", "datatype") if key not in tensor]
        if missing:
            raise InputError(f"input {index} lacks {', '.join(missing)}")
        self.name, self.datatype, self.shape = tensor["name"], tensor["datatype"], tensor["shape"]
        if not isinstance(self.name, str):
            raise InputError(f"input {index}: name must be a string")
        self.what = f"input {self.name!r}"
        if self.datatype not in DATATYPES:
            raise InputError(f"{self.what}: datatype must be one of {', '.join(DATATYPES)}, got {self.datatype!r}")
        if not isinstance(self.shape, list) or not self.shape or not all(_is_count(size) for size in self.shape):
            raise InputError(f"{self.what}: shape must be a list of non-negative integers, got {self.shape!r}")
        parameters = tensor.get("parameters", {})
        if not isinstance(parameters, dict):
            raise InputError(f"{self.what}: parameters must be an object")
        self.binary_size: int | None = parameters.get("binary_data_size")
        if self.binary_size is not None and not _is_count(self.binary_size):
            raise InputError(f"{self.what}: parameters.binary_data_size must be a non-negative integer")
        has_data = "data" in tensor
        if has_data and self.binary_size is not None:
            raise InputError(f"{self.what} has both data and parameters.binary_data_size; send one")
        if not has_data and self.binary_size is None:
            raise InputError(f"{self.what} lacks data (or parameters.binary_data_size for binary data)")
        self.data = tensor.get("data")
        self.elements = math.prod(self.shape)
        # Images in this tensor: the first dimension of pixel arrays, every element of BYTES.
        self.images = self.elements if self.datatype == BYTES else self.shape[0]

    def pixels_from_json(self, text_has_booleans: bool, budget: DecodeBudget) -> np.ndarray:
        if self.datatype == BYTES:
            items = _flatten(self.data, len(self.shape), self.what)
            self._check_count(len(items), "data holds")
            return np.stack([self._json_image(item, f"{self.what} element {i}", budget)
                             for i, item in enumerate(items)])
        dtype = np.dtype(NUMERIC[self.datatype])
        array = json_pixels(self.data, self.what, text_has_booleans, integers_only=dtype.kind in "iu")
        self._check_count(array.size, "data holds")
        if dtype.kind in "iu" and array.max() > np.iinfo(dtype).max:
            raise InputError(f"{self.what}: value {array.max()} does not fit {self.datatype}")
        return batch_of_images(array.reshape(self.shape), self.what)

    def pixels_from_binary(self, raw: memoryview, budget: DecodeBudget) -> np.ndarray:
        if self.datatype == BYTES:
            items = _length_prefixed(raw, self.what)
            self._check_count(len(items), "binary data holds")
            return np.stack([image_bytes(item, f"{self.what} element {i}", budget) for i, item in enumerate(items)])
        dtype = np.dtype(NUMERIC[self.datatype])
        expected = self.elements * dtype.itemsize
        if len(raw) != expected:
            raise InputError(f"{self.what}: binary_data_size {len(raw)} does not match shape {self.shape} of "
                             f"{self.datatype} ({expected} bytes)")
        array = np.frombuffer(raw, dtype=dtype).reshape(self.shape)  # a view of the body: no copy
        return batch_of_images(numeric_array(array, self.what), self.what)

    def _check_count(self, found: int, where: str) -> None:
        if found != self.elements:
            raise InputError(f"{self.what}: shape {self.shape} needs {self.elements} values, {where} {found}")

    def _json_image(self, item: Any, what: str, budget: DecodeBudget) -> np.ndarray:
        if isinstance(item, dict):
            return b64_image(item, what, budget)
        return image_bytes(b64_bytes(item, what), what, budget)


def _flatten(data: Any, rank: int, what: str) -> list[Any]:
    """Nested JSON lists -> their leaves, level by level (no recursion: JSON may nest 1,000 levels)."""
    if not isinstance(data, list):
        raise InputError(f"{what}: data must be a list")
    level, depth = data, 1
    while any(isinstance(item, list) for item in level):
        depth += 1
        if depth > rank:
            raise InputError(f"{what}: data is nested deeper than its shape's {rank} dimensions")
        level = [leaf for item in level for leaf in (item if isinstance(item, list) else [item])]
    return level


def _length_prefixed(raw: memoryview, what: str) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        if offset + LENGTH_PREFIX > len(raw):
            raise InputError(f"{what}: BYTES element {len(items)} is cut off in its 4-byte length")
        size = int.from_bytes(raw[offset: offset + LENGTH_PREFIX], "little")
        offset += LENGTH_PREFIX
        if offset + size > len(raw):
            raise InputError(f"{what}: BYTES element {len(items)} says {size} bytes, only {len(raw) - offset} left")
        items.append(bytes(raw[offset: offset + size]))
        offset += size
    return items


def _requested_outputs(request: Mapping[str, Any], parameters: Mapping[str, Any]) -> tuple[RequestedOutput, ...]:
    binary_default = parameters.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InputError("parameters.binary_data_output must be true or false")
    requested = request.get("outputs")
    if requested is None:  # the protocol: every output, in the request's default form
        return tuple(RequestedOutput(name, binary_default) for name in OUTPUTS)
    if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                  for o in requested):
        raise InputError('"outputs" must be a list of objects with a "name" string')
    unknown = [o["name"] for o in requested if o["name"] not in OUTPUTS]
    if unknown:
        raise InputError(f"unknown outputs {unknown}; this model has {list(OUTPUTS)}")
    names = [o["name"] for o in requested]
    if len(set(names)) != len(names):
        raise InputError(f"outputs named more than once: {names}")
    outputs = []
    for output in requested:
        options = output.get("parameters", {})
        binary = options.get("binary_data", binary_default) if isinstance(options, dict) else None
        if not isinstance(binary, bool):
            raise InputError(f"output {output['name']!r}: parameters must be an object and binary_data true or false")
        outputs.append(RequestedOutput(output["name"], binary))
    return tuple(outputs)


def decode(body: bytes, header_length: str | None, max_batch_size: int, version: int | None = None) -> InferRequest:
    """An infer request body (and its Inference-Header-Content-Length header, if any) -> InferRequest."""
    header, binary = _header_split(body, header_length)
    try:
        request = json_object(header, ("inputs",))
    except InputError as error:
        if header_length is None:
            error.message += f" (binary tensor data needs the {HEADER_LENGTH} header)"
        raise
    if "id" in request and not isinstance(request["id"], str):
        raise InputError('"id" must be a string')
    parameters = request.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InputError('"parameters" must be an object')
    outputs = _requested_outputs(request, parameters)
    inputs = request["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise InputError('"inputs" must be a non-empty list of tensors')
    tensors = [_Tensor(tensor, index) for index, tensor in enumerate(inputs)]
    check_batch_size(sum(tensor.images for tensor in tensors), max_batch_size)  # before decoding any data
    batches = _tensor_pixels(tensors, may_hold_booleans(body, len(header)), binary)
    pixels = batches[0] if len(batches) == 1 else np.concatenate(batches)
    return InferRequest(pixels, version, outputs, parameters, request.get("id"))


def _tensor_pixels(tensors: list[_Tensor], text_has_booleans: bool, binary: memoryview | None) -> list[np.ndarray]:
    """Each input tensor's pixels, from its JSON data or its slice of the binary data after the JSON header."""
    batches, offset, budget = [], 0, DecodeBudget()
    for tensor in tensors:
        if tensor.binary_size is None:
            batches.append(tensor.pixels_from_json(text_has_booleans, budget))
            continue
        if binary is None:
            raise InputError(f"{tensor.what} has parameters.binary_data_size but the request has no "
                             f"{HEADER_LENGTH} header saying where the JSON ends")
        if offset + tensor.binary_size > len(binary):
            raise InputError(f"{tensor.what}: binary_data_size {tensor.binary_size} runs past the end of the body "
                             f"({len(binary) - offset} bytes left after the JSON and earlier inputs)")
        batches.append(tensor.pixels_from_binary(binary[offset: offset + tensor.binary_size], budget))
        offset += tensor.binary_size
    if binary is not None and offset != len(binary):
        raise InputError(f"{len(binary) - offset} bytes follow the JSON and the binary inputs; "
                         f"{HEADER_LENGTH} or binary_data_size is wrong")
    return batches


def encode(result: InferResult, request: InferRequest) -> Encoded:
    arrays = {"probabilities": result.probabilities, "label": result.labels}
    shapes = {"probabilities": list(result.probabilities.shape), "label": [len(result.probabilities)]}
    described, chunks = [], []
    for output in request.outputs:
        datatype, dtype = OUTPUTS[output.name]
        tensor: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": shapes[output.name]}
        array = arrays[output.name]
        if output.binary:
            raw = np.ascontiguousarray(array, dtype=dtype).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = np.ascontiguousarray(array).ravel()
        described.append(tensor)
    answer: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": str(result.version)}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = described
    header = dump_json(answer)
    if not chunks:
        return header, {"Content-Type": JSON_TYPE}
    return b"".join([header, *chunks]), {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(header))}


# -- metadata and health bodies -------------------------------------------------------------------

def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}


def model_metadata(versions: list[int], platform: str) -> dict[str, Any]:
    return {
        "name": MODEL_NAME,
        "versions": [str(version) for version in versions],
        "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, IMAGE_SIDE, IMAGE_SIDE]}],
        "outputs": [{"name": name, "datatype": datatype, "shape": [-1, 10] if name == "probabilities" else [-1]}
                    for name, (datatype, _dtype) in OUTPUTS.items()],
    }
