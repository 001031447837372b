"""TensorFlow Serving's REST format (`/v1/models/mnist...`): a client written for TF Serving works unchanged.

Instances are MNIST pixel arrays 0..255 (28x28, 784 or 28x28x1) or {"b64": "<image>"}, in the
row format (`instances` -> `predictions`) or the columnar one (`inputs` -> `outputs`). TF
Serving ignores Content-Type (its clients often omit it), and so does this codec.
"""

from __future__ import annotations

from typing import Any

from server.errors import InputError, NotFound
from server.protocols.common import (
    Encoded,
    InferRequest,
    InferResult,
    instances,
    json_answer,
    json_object,
    may_hold_booleans,
)
from shared.config import MODEL_NAME
from shared.image import IMAGE_SIDE

SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


def decode(body: bytes, max_batch_size: int, version: int | None = None) -> InferRequest:
    request = json_object(body)
    text_has_booleans = may_hold_booleans(body)
    signature = request.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise NotFound(f"signature_name {signature!r} not found; this model has {SIGNATURE!r}")
    if ("instances" in request) == ("inputs" in request):
        raise InputError('body must hold exactly one of "instances" (row format) or "inputs" (columnar format)')
    if "instances" in request:
        return InferRequest(instances(request["instances"], "instances", max_batch_size, text_has_booleans), version,
                            form="predictions")
    inputs = request["inputs"]
    if isinstance(inputs, dict):  # named columnar inputs: this model has exactly one
        if list(inputs) != [INPUT_NAME]:
            raise InputError(f'"inputs" must name the one input {INPUT_NAME!r}, got {list(inputs)}')
        inputs = inputs[INPUT_NAME]
    return InferRequest(instances(inputs, "inputs", max_batch_size, text_has_booleans), version, form="outputs")


def encode(result: InferResult, request: InferRequest) -> Encoded:
    return json_answer({request.form or "predictions": result.probabilities})


# -- status and metadata bodies -----------------------------------------------------------------

def _available(version: int) -> dict[str, Any]:
    return {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def _failed(version: int, error: str) -> dict[str, Any]:
    return {"version": str(version), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": error}}


def model_status(available: list[int], failed: dict[int, str]) -> dict[str, Any]:
    """`model_version_status` of versions that serve and of versions that failed to load (with why)."""
    return {"model_version_status": [_available(version) for version in available]
            + [_failed(version, error) for version, error in sorted(failed.items())]}


def _dims(*sizes: int) -> dict[str, Any]:
    return {"dim": [{"size": str(size), "name": ""} for size in sizes], "unknown_rank": False}


def metadata(version: int) -> dict[str, Any]:
    return {
        "model_spec": {"name": MODEL_NAME, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: {
            "inputs": {INPUT_NAME: {"dtype": "DT_FLOAT", "tensor_shape": _dims(-1, IMAGE_SIDE, IMAGE_SIDE),
                                    "name": INPUT_NAME}},
            "outputs": {OUTPUT_NAME: {"dtype": "DT_FLOAT", "tensor_shape": _dims(-1, 10), "name": OUTPUT_NAME}},
            "method_name": "tensorflow/serving/predict",
        }}}},
    }
