"""KServe / Open Inference Protocol v2 (`/v2/...`): health, model metadata and `infer`.

Input tensors are UINT8 or FP32 pixel values 0..255 of shape [N, 28, 28] (also [N, 784] or
[N, 28, 28, 1]), data flat or nested. The answer's `probabilities` output is FP32 [N, 10];
a `label` output (INT64 [N]) is returned when asked for in `outputs`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from flask import Blueprint

from server import inference
from server.auth import require_token
from server.errors import Unavailable
from server.inference import InputError
from server.params import json_object
from server.services import services
from shared.config import MODEL_NAME

bp = Blueprint("kserve", __name__)
PREFIX = f"/v2/models/{MODEL_NAME}"
INPUT_NAME = "pixels"
DATATYPES = ("UINT8", "FP32")
OUTPUTS = ("probabilities", "label")


@bp.get("/v2/health/live")
def live():
    return {"live": True}


@bp.get("/v2/health/ready")
def ready():
    if services().manager.current is None:
        raise Unavailable(services().manager.not_ready_reason(), ready=False)
    return {"ready": True}


@bp.get(PREFIX)
def model_metadata():
    manager = services().manager
    platform = "onnxruntime_onnx" if services().config.backend == "onnx" else "tensorflow_keras"
    return {
        "name": MODEL_NAME,
        "versions": [str(version) for version in manager.store.versions()],
        "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, 28, 28]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}],
    }


@bp.get(PREFIX + "/ready")
def model_ready():
    manager = services().manager
    if manager.current is None:
        raise Unavailable(manager.not_ready_reason(), name=MODEL_NAME, ready=False)
    return {"name": MODEL_NAME, "ready": True}


def _tensor_pixels(tensor: Any, limit: int) -> np.ndarray:
    if not isinstance(tensor, dict):
        raise InputError("each input must be an object with name, shape, datatype and data")
    missing = [key for key in ("name", "shape", "datatype", "data") if key not in tensor]
    if missing:
        raise InputError(f"input lacks {', '.join(missing)}")
    datatype, shape = tensor["datatype"], tensor["shape"]
    if datatype not in DATATYPES:
        raise InputError(f"datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}")
    if (not isinstance(shape, list) or not shape
            or not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in shape)):
        raise InputError(f"shape must be a list of non-negative integers, got {shape!r}")
    inference.check_batch_size(shape[0], limit)
    what = f"input {tensor['name']!r}"
    array = inference.numeric_array(tensor["data"], what, integers_only=datatype == "UINT8")
    if array.size != math.prod(shape):
        raise InputError(f"{what}: shape {shape} needs {math.prod(shape)} values, data holds {array.size}")
    return inference.batch_of_images(array.reshape(shape), what)


def _requested_outputs(body: dict[str, Any]) -> list[str]:
    requested = body.get("outputs")
    if requested is None:
        return ["probabilities"]
    if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
        raise InputError('"outputs" must be a list of objects with a "name"')
    names = [o["name"] for o in requested]
    unknown = [name for name in names if name not in OUTPUTS]
    if unknown:
        raise InputError(f"unknown outputs {unknown}; this model has {list(OUTPUTS)}")
    return names


@bp.post(PREFIX + "/infer")
@require_token
def infer():
    body = json_object(("inputs",), any_content_type=True)  # like TF Serving: clients often omit Content-Type
    inputs = body["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise InputError('"inputs" must be a list holding exactly one tensor')
    if "id" in body and not isinstance(body["id"], str):
        raise InputError('"id" must be a string')
    names = _requested_outputs(body)
    result = services().inference.predict(_tensor_pixels(inputs[0], services().config.max_batch_size))
    count = len(result.probabilities)
    tensors = {
        "probabilities": {"name": "probabilities", "shape": [count, 10], "datatype": "FP32",
                          "data": result.probabilities.astype(float).ravel().tolist()},
        "label": {"name": "label", "shape": [count], "datatype": "INT64", "data": result.labels},
    }
    answer: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": str(result.version)}
    if "id" in body:
        answer["id"] = body["id"]
    answer["outputs"] = [tensors[name] for name in names]
    return answer


