"""The OpenAPI 3 document served at /openapi.json: every route, its inputs, answers and 4xx cases.

A test compares the app's URL rules with `paths` here, so a new route without documentation
fails the suite. Limits (MAX_BATCH_SIZE, MAX_BODY_BYTES) come from the running configuration.
The v2 infer body may be JSON or the binary tensor data extension (JSON header, then raw
tensor bytes; `Inference-Header-Content-Length` says where the JSON ends), described under
`application/octet-stream`.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from server.pipeline import INFER_ROUTES
from server.protocols import v2
from server.routes.samples import MAX_COLS, MAX_GRID, MAX_LIMIT, MAX_SCALE
from server.services import EXTENSION
from shared.config import MODEL_NAME
from shared.image import IMAGE_PIXELS, IMAGE_SIDE

JSON = "application/json"
_ERRORS = {
    400: "The request is malformed; `error` says what was wrong.",
    401: "AUTH_TOKEN is set and the bearer token is missing or wrong.",
    404: "No such model version, split, sample or signature.",
    413: "The body is larger than MAX_BODY_BYTES.",
    415: "Unsupported Content-Type.",
    503: "No model is loaded yet (or the dataset is missing), or the worker holds its BODY_BUFFER_BYTES of"
         " request bodies (then with Retry-After); `error` gives the reason.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _array(items: dict[str, Any], size: int | None = None, **more: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "array", "items": items, **more}
    if size is not None:
        schema.update(minItems=size, maxItems=size)
    return schema


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _op(summary: str, ok: dict[str, Any], errors: tuple[int, ...] = (), tag: str = "ops",
        params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        secured: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {"200": ok}}
    for status in errors:
        operation["responses"][str(status)] = _json(_ref("Error"), _ERRORS[status])
    if params:
        operation["parameters"] = params
    if body:
        operation["requestBody"] = {"required": True, "content": body}
    if secured:  # optional: only enforced when AUTH_TOKEN is set
        operation["security"] = [{}, {"bearerAuth": []}]
        operation["responses"]["401"] = _json(_ref("Error"), _ERRORS[401])
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _schemas(max_batch: int) -> dict[str, Any]:
    pixel = {"type": "number", "minimum": 0, "maximum": 255}
    probabilities = _array({"type": "number", "minimum": 0, "maximum": 1}, 10)
    instances = _array(_ref("Instance"), minItems=1, maxItems=max_batch)
    version_status = {"type": "object", "required": ["version", "state", "status"], "properties": {
        "version": {"type": "string"}, "state": {"type": "string", "enum": ["AVAILABLE", "END"]},
        "status": {"type": "object", "properties": {"error_code": {"type": "string"},
                                                    "error_message": {"type": "string"}}}}}
    tensor_meta = {"type": "object", "required": ["name", "datatype", "shape"], "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string"}, "shape": _array({"type": "integer"})}}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "ready": {"type": "boolean"}, "name": {"type": "string"}}},
        "Image28x28": _array(_array(pixel, IMAGE_SIDE), IMAGE_SIDE,
                             description=f"{IMAGE_SIDE} rows of {IMAGE_SIDE} pixel values 0..255"),
        "Image784": _array(pixel, IMAGE_PIXELS, description=f"{IMAGE_PIXELS} pixel values 0..255, row by row"),
        "Image28x28x1": _array(_array(_array(pixel, 1), IMAGE_SIDE), IMAGE_SIDE,
                               description=f"{IMAGE_SIDE}x{IMAGE_SIDE}x1 pixel values 0..255"),
        "B64Image": {"type": "object", "required": ["b64"], "additionalProperties": False, "properties": {
            "b64": {"type": "string", "format": "byte",
                    "description": "base64 PNG/JPEG of any size; made MNIST-like (grayscale, inverted if "
                                   "dark on light, cropped, fitted in 20x20, centred by mass in 28x28)"}}},
        "Instance": {"oneOf": [_ref("Image28x28"), _ref("Image784"), _ref("Image28x28x1"), _ref("B64Image")]},
        "Prediction": {"type": "object", "required": ["label", "probabilities"], "properties": {
            "label": {"type": "integer", "minimum": 0, "maximum": 9}, "probabilities": probabilities}},
        "PredictRequest": {"type": "object", "required": ["instances"], "properties": {"instances": instances}},
        "PredictResponse": {"type": "object", "required": ["model_version", "predictions"], "properties": {
            "model_version": {"type": "integer"}, "predictions": _array(_ref("Prediction"))}},
        "TfPredictRequest": {"type": "object", "properties": {
            "signature_name": {"type": "string", "enum": ["serving_default"]},
            "instances": instances,
            "inputs": {"oneOf": [instances, {"type": "object", "required": ["pixels"],
                                             "additionalProperties": False, "properties": {"pixels": instances}}]}},
            "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
            "description": "exactly one of `instances` (answer `predictions`) or `inputs` (answer `outputs`)"},
        "TfPredictResponse": {"type": "object", "properties": {
            "predictions": _array(probabilities), "outputs": _array(probabilities)}},
        "TfModelStatus": {"type": "object", "required": ["model_version_status"], "properties": {
            "model_version_status": _array(version_status)}},
        "TfMetadata": {"type": "object", "required": ["model_spec", "metadata"], "properties": {
            "model_spec": {"type": "object"}, "metadata": {"type": "object"}}},
        "V2Tensor": {"type": "object", "required": ["name", "shape", "datatype"], "properties": {
            "name": {"type": "string"},
            "shape": _array({"type": "integer", "minimum": 0}, minItems=1, maxItems=4,
                            description="numbers: [N, 28, 28], [N, 784] or [N, 28, 28, 1]; BYTES: [N] or [N, 1]"),
            "datatype": {"type": "string", "enum": list(v2.DATATYPES)},
            "data": {"type": "array", "minItems": 1,
                     "description": "pixel values 0..255, flat or nested (integers for integer datatypes); "
                                    "BYTES: one base64 PNG/JPEG per image. Absent with binary_data_size."},
            "parameters": {"type": "object", "properties": {"binary_data_size": {
                "type": "integer", "minimum": 0,
                "description": "this input's bytes follow the JSON (binary tensor data extension): little-endian "
                               "numbers, or per BYTES element a 4-byte little-endian length and the image"}}}}},
        "V2InferRequest": {"type": "object", "required": ["inputs"], "properties": {
            "id": {"type": "string"}, "inputs": _array(_ref("V2Tensor"), minItems=1,
                                                       description="joined in order into one batch"),
            "outputs": _array({"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "enum": list(v2.OUTPUTS)},
                "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}},
                description="default: every output"),
            "parameters": {"type": "object", "properties": {"binary_data_output": {
                "type": "boolean", "description": "outputs as binary data unless an output says otherwise"}}}}},
        "V2InferResponse": {"type": "object", "required": ["model_name", "model_version", "outputs"], "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": _array({"type": "object", "required": ["name", "shape", "datatype"], "properties": {
                "name": {"type": "string"}, "shape": _array({"type": "integer"}),
                "datatype": {"type": "string"}, "data": _array({"type": "number"}),
                "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}}}})}},
        "V2ServerMetadata": {"type": "object", "required": ["name", "version", "extensions"], "properties": {
            "name": {"type": "string"}, "version": {"type": "string"}, "extensions": _array({"type": "string"})}},
        "V2ModelMetadata": {"type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
                            "properties": {"name": {"type": "string"}, "versions": _array({"type": "string"}),
                                           "platform": {"type": "string"}, "inputs": _array(tensor_meta),
                                           "outputs": _array(tensor_meta)}},
        "Sample": {"type": "object", "required": ["index", "label", "predicted", "probability", "image_url",
                                                  "pixels_url"], "properties": {
            "index": {"type": "integer"}, "label": {"type": "integer"},
            "predicted": {"type": "integer", "nullable": True}, "probability": {"type": "number", "nullable": True},
            "image_url": {"type": "string"}, "pixels_url": {"type": "string"}}},
        "SampleList": {"type": "object", "required": ["split", "offset", "limit", "total", "model_version",
                                                      "samples", "next_offset"], "properties": {
            "split": {"type": "string"}, "offset": {"type": "integer"}, "limit": {"type": "integer"},
            "total": {"type": "integer"}, "model_version": {"type": "integer", "nullable": True},
            "samples": _array(_ref("Sample")),
            "next_offset": {"type": "integer", "nullable": True,
                            "description": "offset to continue from; null at the end of the split"}}},
        "SamplePixels": {"type": "object", "required": ["split", "index", "label", "pixels"], "properties": {
            "split": {"type": "string"}, "index": {"type": "integer"}, "label": {"type": "integer"},
            "pixels": _ref("Image28x28")}},
        "Models": {"type": "object", "required": ["served_version", "pinned", "versions", "failed", "metadata"],
                   "properties": {
                       "served_version": {"type": "integer", "nullable": True},
                       "pinned": {"type": "integer", "nullable": True}, "backend": {"type": "string"},
                       "versions": _array({"type": "object", "properties": {
                           "version": {"type": "integer"}, "created": {"type": "string", "nullable": True},
                           "test_accuracy": {"type": "number", "nullable": True}}}),
                       "failed": _array({"type": "object", "properties": {
                           "version": {"type": "integer"}, "error": {"type": "string"}}}),
                       "metadata": {"type": "object", "nullable": True,
                                    "description": "metadata.json of the served version"}}},
    }


def _v2_infer(params: list[dict[str, Any]]) -> dict[str, Any]:
    """The v2 infer operation on the served model (no params) or on one version."""
    missing = (404, 503) if params else (503,)
    binary = {"schema": {"type": "string", "format": "binary", "description": (
        "binary tensor data extension: the V2InferRequest JSON, then the inputs' raw bytes in order; the "
        f"{v2.HEADER_LENGTH} header gives the JSON's length. Binary outputs come back the same way.")}}
    infer_ok = {"description": "OK: JSON, or (binary outputs) JSON then raw output bytes",
                "headers": {v2.HEADER_LENGTH: {"schema": {"type": "integer"},
                                               "description": "length of the JSON part (binary outputs only)"}},
                "content": {JSON: {"schema": _ref("V2InferResponse")}, v2.BINARY_TYPE: binary}}
    header = {"name": v2.HEADER_LENGTH, "in": "header", "required": False, "schema": {"type": "integer", "minimum": 0},
              "description": "length of the JSON part when binary tensor data follows it"}
    return _op("KServe v2 inference (JSON or binary tensor data)", infer_ok, (400, 413, 415, *missing), "kserve",
               [*params, header], {JSON: {"schema": _ref("V2InferRequest")}, v2.BINARY_TYPE: binary}, secured=True)


def _v2_model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    """Metadata and readiness of the served model (no params) or of one version (infer: `_infer_paths`)."""
    missing = (404, 503) if params else (503,)
    ready = _json({"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}})
    return {
        prefix: {"get": _op("KServe v2 model metadata", _json(_ref("V2ModelMetadata")), missing if params else (),
                            "kserve", params or None)},
        prefix + "/ready": {"get": _op("KServe v2 model readiness", ready, missing, "kserve", params or None)},
    }


def _infer_paths(operations: dict[str, dict[str, Any]], version: dict[str, Any]) -> dict[str, Any]:
    """Every predict route of the pipeline's table (server.pipeline.INFER_ROUTES), by its codec's operation."""
    paths = {}
    for route in INFER_ROUTES:
        operation = operations[route.codec]
        if "{version}" in route.path:
            operation = _v2_infer([version]) if route.codec == "v2" else {**operation, "parameters": [version]}
        paths[route.path] = {"post": operation}
    return paths


def _paths(max_batch: int) -> dict[str, Any]:
    png = {"description": "PNG image", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}
    body_errors = (400, 413, 415, 503)
    version = _path("version", {"type": "integer", "minimum": 0}, "model version number")
    split_query = _query("split", {"type": "string", "enum": ["train", "test"]}, "MNIST split")
    offset = _query("offset", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                    "first image index (past the end: an empty page)")
    split_path = _path("split", {"type": "string", "enum": ["train", "test"]}, "MNIST split")
    index = _path("index", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, "image index in the split")
    native_body = {
        JSON: {"schema": _ref("PredictRequest")},
        "multipart/form-data": {"schema": {"type": "object", "minProperties": 1, "maxProperties": max_batch,
                                           "additionalProperties": {"type": "string", "format": "binary"},
                                           "description": "one or more image files, any field names"}},
        "application/x-npy": {"schema": {"type": "string", "format": "binary",
                                         "description": ".npy array N x 28 x 28 (or N x 784, N x 28 x 28 x 1), "
                                                        "pixel values 0..255, no pickles"}},
    }
    tf_predict = _op("TF Serving predict (row `instances` or columnar `inputs`)", _json(_ref("TfPredictResponse")),
                     (*body_errors, 404), "tfserving", body={JSON: {"schema": _ref("TfPredictRequest")}},
                     secured=True)
    status_answer = _json(_ref("TfModelStatus"))
    paths = {
        "/healthz": {"get": _op("Liveness: the process answers", _json({"type": "object", "properties": {
            "status": {"type": "string"}}}))},
        "/readyz": {"get": _op("Readiness: a model is loaded and warmed", _json({"type": "object", "properties": {
            "ready": {"type": "boolean"}, "model_version": {"type": "integer"}}}), (503,))},
        "/metrics": {"get": _op("Prometheus metrics of all workers", {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}})},
        "/models": {"get": _op("Served version, versions in the store, failed loads, metadata",
                               _json(_ref("Models")))},
        "/openapi.json": {"get": _op("This document", _json({"type": "object"}))},
        f"/v1/models/{MODEL_NAME}": {"get": _op("TF Serving model status", status_answer, (503,), "tfserving")},
        f"/v1/models/{MODEL_NAME}/versions/{{version}}": {"get": _op(
            "TF Serving status of one version (loads it on demand)", status_answer, (404, 503), "tfserving",
            [version])},
        f"/v1/models/{MODEL_NAME}/metadata": {"get": _op("TF Serving signature metadata",
                                                         _json(_ref("TfMetadata")), (503,), "tfserving")},
        f"/v1/models/{MODEL_NAME}/versions/{{version}}/metadata": {"get": _op(
            "TF Serving signature metadata of one version", _json(_ref("TfMetadata")), (404, 503), "tfserving",
            [version])},
        "/v2/health/live": {"get": _op("KServe v2 liveness", _json({"type": "object", "properties": {
            "live": {"type": "boolean"}}}), tag="kserve")},
        "/v2/health/ready": {"get": _op("KServe v2 readiness", _json({"type": "object", "properties": {
            "ready": {"type": "boolean"}}}), (503,), "kserve")},
        "/v2": {"get": _op("KServe v2 server metadata (name, version, extensions)", _json(_ref("V2ServerMetadata")),
                           tag="kserve")},
        **_v2_model_paths(f"/v2/models/{MODEL_NAME}", []),
        **_v2_model_paths(f"/v2/models/{MODEL_NAME}/versions/{{version}}", [version]),
        **_infer_paths({"native": _op("Predict digits (JSON instances, image files or .npy)",
                                      _json(_ref("PredictResponse")), body_errors, "predict", body=native_body,
                                      secured=True),
                        "tfserving": tf_predict, "v2": _v2_infer([])}, version),
        "/samples": {"get": _op("MNIST samples with the served model's predictions", _json(_ref("SampleList")),
                                (400, 503), "samples", [
            split_query, offset,
            _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}, "samples per page"),
            _query("wrong_only", {"type": "boolean"},
                   "only misclassified samples, scanning forward from offset (needs a model)")])},
        "/samples/{split}/{index}.png": {"get": _op("One sample as PNG", png, (400, 404, 503), "samples", [
            split_path, index,
            _query("scale", {"type": "integer", "minimum": 1, "maximum": MAX_SCALE}, "enlargement factor")])},
        "/samples/{split}/{index}.json": {"get": _op("One sample's pixels (post them to /predict)",
                                                     _json(_ref("SamplePixels")), (400, 404, 503), "samples",
                                                     [split_path, index])},
        "/samples/grid.png": {"get": _op("A titled grid of samples; wrong predictions in red", png, (400, 503),
                                         "samples", [
            split_query, offset,
            _query("count", {"type": "integer", "minimum": 1, "maximum": MAX_GRID}, "images in the grid"),
            _query("cols", {"type": "integer", "minimum": 1, "maximum": MAX_COLS}, "columns")])},
        "/": {"get": _op("The web page", {"description": "HTML page",
                                          "content": {"text/html": {"schema": {"type": "string"}}}}, tag="web")},
    }
    return paths


def openapi_document(app: Flask) -> dict[str, Any]:
    config = app.extensions[EXTENSION].config
    return {
        "openapi": "3.0.3",
        "info": {"title": "MNIST prediction server", "version": "1.0.0",
                 "description": "Digit recognition over a Keras MNIST model: native, TF Serving and KServe v2 "
                                f"wire formats. Bodies up to {config.max_body_bytes} bytes, batches up to "
                                f"{config.max_batch_size} images. Errors are JSON {{\"error\": \"...\"}}."},
        "paths": _paths(config.max_batch_size),
        "components": {"schemas": _schemas(config.max_batch_size),
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
    }


def flask_rule_to_path(rule: str) -> str:
    """`/samples/<split>/<index>.png` -> `/samples/{split}/{index}.png` (used by the in-step test)."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)
