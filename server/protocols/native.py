"""The native `/predict` format: JSON instances, multipart image files or a raw `.npy` array.

Answer: `{"model_version": 3, "predictions": [{"label": 7, "probabilities": [10 floats]}, ...]}`.
"""

from __future__ import annotations

import numpy as np
from werkzeug.http import parse_options_header

from server import multipart
from server.errors import InputError, UnsupportedMediaType
from server.protocols.common import (
    Encoded,
    InferRequest,
    InferResult,
    check_batch_size,
    image_bytes,
    instances,
    json_answer,
    json_object,
    may_hold_booleans,
    npy_body,
)
from shared.preprocess import DecodeBudget

NPY_TYPES = ("application/x-npy", "application/npy")


def is_json_type(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _multipart_images(body: bytes, boundary: str | None, max_batch_size: int) -> np.ndarray:
    files = multipart.uploads(body, boundary)
    if not files:
        raise InputError("multipart body holds no image files")
    check_batch_size(len(files), max_batch_size)
    budget = DecodeBudget()
    return np.stack([image_bytes(bytes(upload.data), f"file {upload.field!r} ({upload.filename!r})", budget)
                     for upload in files])


def decode(body: bytes, content_type: str | None, max_batch_size: int) -> InferRequest:
    """Whatever the client sent, as (N, 28, 28) validated pixels; 415 for a Content-Type we do not read."""
    mimetype, options = parse_options_header(content_type or "")
    if mimetype == "multipart/form-data":
        return InferRequest(_multipart_images(body, options.get("boundary"), max_batch_size))
    if mimetype in NPY_TYPES:
        return InferRequest(npy_body(body))
    if is_json_type(mimetype):
        return InferRequest(instances(json_object(body, ("instances",))["instances"], "instances", max_batch_size,
                                      may_hold_booleans(body)))
    raise UnsupportedMediaType(f"unsupported Content-Type {mimetype or 'none'!r}; send application/json,"
                               " multipart/form-data or application/x-npy")


def encode(result: InferResult, _request: InferRequest) -> Encoded:
    rows = result.probabilities
    return json_answer({
        "model_version": result.version,
        "predictions": [{"label": label, "probabilities": rows[index]}
                        for index, label in enumerate(result.labels.tolist())],
    })
