"""Native `POST /predict`: JSON instances, multipart image files or a raw .npy array."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask import Blueprint, request

from server import inference, multipart
from server.auth import require_token
from server.errors import ApiError
from server.inference import InputError, Result
from server.params import body_bytes, json_object
from server.services import services

bp = Blueprint("predict", __name__)
NPY_TYPES = ("application/x-npy", "application/npy")


def _multipart_images(max_batch_size: int) -> np.ndarray:
    files = multipart.uploads(body_bytes(), request.mimetype_params.get("boundary"))
    if not files:
        raise InputError("multipart body holds no image files")
    inference.check_batch_size(len(files), max_batch_size)
    return np.stack([inference.image_bytes(bytes(upload.data), f"file {upload.field!r} ({upload.filename!r})")
                     for upload in files])


def request_pixels() -> np.ndarray:
    """Whatever the client sent, as (N, 28, 28) validated pixels."""
    limit = services().config.max_batch_size
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        return _multipart_images(limit)
    if mimetype in NPY_TYPES:
        return inference.npy_body(body_bytes())
    if request.is_json:
        return inference.instances(json_object(("instances",))["instances"], "instances", limit)
    raise ApiError(f"unsupported Content-Type {mimetype or 'none'!r}; send application/json,"
                   " multipart/form-data or application/x-npy", 415)


def native_answer(result: Result) -> dict[str, Any]:
    return {
        "model_version": result.version,
        "predictions": [{"label": label, "probabilities": row} for label, row in zip(result.labels, result.rows(),
                                                                                      strict=True)],
    }


@bp.post("/predict")
@require_token
def predict():
    return native_answer(services().inference.predict(request_pixels()))
