"""Open Inference Protocol v2 over gRPC: protobuf messages <-> InferRequest / InferResult.

The same model, datatypes, shapes, BYTES images, outputs, parameters and id as the HTTP codec
(server.protocols.v2), and the same error messages where the two say the same thing. What differs
is where a tensor's data lives:

- `raw_input_contents`, one entry per input in input order (tritonclient.grpc's default): numbers
  little-endian and row-major, BYTES elements each a 4-byte little-endian length and the bytes;
- or each input's typed `contents` (`uint_contents` for UINT8..UINT32, `int_contents` for
  INT8..INT32, `int64_contents`, `uint64_contents`, `fp32_contents`, `fp64_contents`,
  `bytes_contents`); FP16 has no typed field and must be raw, as the protocol says.

Outputs are answered in `raw_output_contents`, as Triton does: tritonclient.grpc's `as_numpy` reads
nothing else. The request parameter `binary_data_output: false` asks for typed contents instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from server.errors import InputError, NotFound
from server.protocols import v2
from server.protocols import v2_grpc_messages as pb
from server.protocols.common import (
    InferRequest,
    InferResult,
    RequestedOutput,
    batch_of_images,
    check_batch_size,
    image_bytes,
    numeric_array,
)
from shared.config import MODEL_NAME

# The typed-contents field of each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {"UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
                  "UINT64": "uint64_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "FP32": "fp32_contents",
                  "FP64": "fp64_contents", v2.BYTES: "bytes_contents"}


def check_model(name: str) -> None:
    if name != MODEL_NAME:
        raise NotFound(f"unknown model {name!r}; this server serves {MODEL_NAME!r}")


def version_of(text: str) -> int | None:
    """A request's model_version: empty for the served version, else a version number of the store."""
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise InputError(f"model version must be a version number, got {text[:40]!r}")
    return int(text)


def parameter_value(parameter: Any) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


class _Tensor:
    """One input's header, checked before any data is decoded."""

    def __init__(self, tensor: Any, index: int, raw: bytes | None) -> None:
        self.name, self.datatype, self.shape = tensor.name, tensor.datatype, list(tensor.shape)
        self.what = f"input {self.name!r}"
        if self.datatype not in v2.DATATYPES:
            raise InputError(f"{self.what}: datatype must be one of {', '.join(v2.DATATYPES)}, got {self.datatype!r}")
        if not self.shape or any(size < 0 for size in self.shape):
            raise InputError(f"{self.what}: shape must be a list of non-negative integers, got {self.shape!r}")
        if raw is not None and tensor.HasField("contents"):
            raise InputError(f"{self.what} has both contents and raw_input_contents; send one")
        if raw is None and self.datatype == "FP16":
            raise InputError(f"{self.what}: FP16 has no typed contents; send it in raw_input_contents")
        self.contents, self.raw = tensor.contents, raw
        self.elements = math.prod(self.shape)
        # Images in this tensor: the first dimension of pixel arrays, every element of BYTES.
        self.images = self.elements if self.datatype == v2.BYTES else self.shape[0]

    def pixels(self) -> np.ndarray:
        if self.datatype == v2.BYTES:
            items = self._bytes_items()
            return np.stack([image_bytes(item, f"{self.what} element {i}") for i, item in enumerate(items)])
        if self.raw is not None:
            dtype = np.dtype(v2.NUMERIC[self.datatype])
            expected = self.elements * dtype.itemsize
            if len(self.raw) != expected:
                raise InputError(f"{self.what}: raw_input_contents holds {len(self.raw)} bytes but shape {self.shape} "
                                 f"of {self.datatype} needs {expected}")
            array = np.frombuffer(self.raw, dtype=dtype)  # a view of the message's bytes: no copy
        else:
            field = CONTENTS_FIELD[self.datatype]
            values = getattr(self.contents, field)
            self._check_count(len(values), f"contents.{field} holds")
            kind = np.float64 if self.datatype.startswith("FP") else np.int64
            array = np.fromiter(values, dtype=np.uint64 if self.datatype == "UINT64" else kind, count=len(values))
        return batch_of_images(numeric_array(array.reshape(self.shape), self.what), self.what)

    def _bytes_items(self) -> list[bytes]:
        if self.raw is not None:
            items = v2._length_prefixed(memoryview(self.raw), self.what)
            self._check_count(len(items), "raw_input_contents holds")
            return items
        items = list(self.contents.bytes_contents)
        self._check_count(len(items), "contents.bytes_contents holds")
        return items

    def _check_count(self, found: int, where: str) -> None:
        if found != self.elements:
            raise InputError(f"{self.what}: shape {self.shape} needs {self.elements} values, {where} {found}")


def _requested_outputs(request: Any, binary: bool) -> tuple[RequestedOutput, ...]:
    if not request.outputs:  # the protocol: every output
        return tuple(RequestedOutput(name, binary) for name in v2.OUTPUTS)
    names = [output.name for output in request.outputs]
    unknown = [name for name in names if name not in v2.OUTPUTS]
    if unknown:
        raise InputError(f"unknown outputs {unknown}; this model has {list(v2.OUTPUTS)}")
    if len(set(names)) != len(names):
        raise InputError(f"outputs named more than once: {names}")
    return tuple(RequestedOutput(name, binary) for name in names)


def decode(request: Any, max_batch_size: int) -> InferRequest:
    """A ModelInferRequest -> InferRequest (NotFound for another model, InputError saying what was wrong)."""
    check_model(request.model_name)
    version = version_of(request.model_version)
    parameters = {key: parameter_value(value) for key, value in request.parameters.items()}
    raw_entries = request.raw_input_contents
    binary = parameters.get("binary_data_output", True)
    if not isinstance(binary, bool):
        raise InputError("parameters.binary_data_output must be true or false")
    outputs = _requested_outputs(request, binary)
    if not request.inputs:
        raise InputError('"inputs" must be a non-empty list of tensors')
    if raw_entries and len(raw_entries) != len(request.inputs):
        raise InputError(f"raw_input_contents has {len(raw_entries)} entries for {len(request.inputs)} inputs; "
                         "send one per input, in input order")
    tensors = [_Tensor(tensor, index, raw_entries[index] if raw_entries else None)
               for index, tensor in enumerate(request.inputs)]
    check_batch_size(sum(tensor.images for tensor in tensors), max_batch_size)  # before decoding any data
    batches = [tensor.pixels() for tensor in tensors]
    pixels = batches[0] if len(batches) == 1 else np.concatenate(batches)
    return InferRequest(pixels, version, outputs, parameters, request.id or None)


def encode(result: InferResult, request: InferRequest) -> Any:
    """InferResult -> ModelInferResponse: raw_output_contents, or typed contents when the request asked."""
    arrays = {"probabilities": result.probabilities, "label": result.labels}
    response = pb.ModelInferResponse(model_name=MODEL_NAME, model_version=str(result.version), id=request.id or "")
    for output in request.outputs:
        datatype, dtype = v2.OUTPUTS[output.name]
        array = np.ascontiguousarray(arrays[output.name], dtype=dtype)
        tensor = response.outputs.add(name=output.name, datatype=datatype, shape=array.shape)
        if output.binary:
            response.raw_output_contents.append(array.tobytes())
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(array.ravel().tolist())
    return response


def server_metadata() -> Any:
    return pb.ServerMetadataResponse(**v2.server_metadata())


def model_metadata(versions: list[int], platform: str) -> Any:
    described = v2.model_metadata(versions, platform)
    return pb.ModelMetadataResponse(
        name=described["name"], versions=described["versions"], platform=described["platform"],
        inputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in described["inputs"]],
        outputs=[pb.ModelMetadataResponse.TensorMetadata(**tensor) for tensor in described["outputs"]])
