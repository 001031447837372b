"""TensorFlow Serving REST API (`/v1/models/mnist...`): a client written for TF Serving works unchanged.

Instances are MNIST pixel arrays 0..255 (28x28, 784 or 28x28x1) or {"b64": "<image>"}.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from server import inference
from server.auth import require_token
from server.errors import NotFound
from server.inference import InputError
from server.params import json_object
from server.services import services
from shared.config import MODEL_NAME

bp = Blueprint("tfserving", __name__)
PREFIX = f"/v1/models/{MODEL_NAME}"
SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


def _available(version: int) -> dict[str, Any]:
    return {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def _failed(version: int, error: str) -> dict[str, Any]:
    return {"version": str(version), "state": "END", "status": {"error_code": "UNKNOWN", "error_message": error}}


@bp.get(PREFIX)
def model_status():
    manager = services().manager
    current = manager.get()  # 503 with the reason before a model is served
    statuses = [_available(current.version)] + [_failed(f["version"], f["error"]) for f in manager.failures()]
    return {"model_version_status": statuses}


@bp.get(PREFIX + "/versions/<int:version>")
def version_status(version: int):
    manager = services().manager
    failed = {f["version"]: f["error"] for f in manager.failures()}
    if version in failed:
        return {"model_version_status": [_failed(version, failed[version])]}
    manager.get(version)  # 404 when unknown; loads it on demand otherwise
    return {"model_version_status": [_available(version)]}


def _dims(*sizes: int) -> dict[str, Any]:
    return {"dim": [{"size": str(size), "name": ""} for size in sizes], "unknown_rank": False}


def _metadata(version: int) -> dict[str, Any]:
    return {
        "model_spec": {"name": MODEL_NAME, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE: {
            "inputs": {INPUT_NAME: {"dtype": "DT_FLOAT", "tensor_shape": _dims(-1, 28, 28), "name": INPUT_NAME}},
            "outputs": {OUTPUT_NAME: {"dtype": "DT_FLOAT", "tensor_shape": _dims(-1, 10), "name": OUTPUT_NAME}},
            "method_name": "tensorflow/serving/predict",
        }}}},
    }


@bp.get(PREFIX + "/metadata")
def metadata():
    return _metadata(services().manager.get().version)


@bp.get(PREFIX + "/versions/<int:version>/metadata")
def version_metadata(version: int):
    return _metadata(services().manager.get(version).version)


def _predict(version: int | None):
    body = json_object(any_content_type=True)  # TF Serving ignores Content-Type; its clients often omit it
    signature = body.get("signature_name", SIGNATURE)
    if signature != SIGNATURE:
        raise NotFound(f"signature_name {signature!r} not found; this model has {SIGNATURE!r}")
    if ("instances" in body) == ("inputs" in body):
        raise InputError('body must hold exactly one of "instances" (row format) or "inputs" (columnar format)')
    limit = services().config.max_batch_size
    if "instances" in body:
        result = services().inference.predict(inference.instances(body["instances"], "instances", limit), version)
        return {"predictions": result.rows()}
    inputs = body["inputs"]
    if isinstance(inputs, dict):  # named columnar inputs: this model has exactly one
        if list(inputs) != [INPUT_NAME]:
            raise InputError(f'"inputs" must name the one input {INPUT_NAME!r}, got {list(inputs)}')
        inputs = inputs[INPUT_NAME]
    result = services().inference.predict(inference.instances(inputs, "inputs", limit), version)
    return {"outputs": result.rows()}


@bp.post(PREFIX + ":predict")
@require_token
def predict():
    return _predict(None)


@bp.post(PREFIX + "/versions/<int:version>:predict")
@require_token
def predict_version(version: int):
    return _predict(version)
