"""Native `POST /predict`: JSON instances, multipart image files or a raw .npy array (server.protocols.native)."""

from __future__ import annotations

from flask import Blueprint, request

from server.auth import require_token
from server.params import body_bytes, respond
from server.protocols import native
from server.services import services

bp = Blueprint("predict", __name__)


@bp.post("/predict")
@require_token
def predict():
    plane = services().plane
    decoded = native.decode(body_bytes(), request.headers.get("Content-Type"), plane.max_batch_size)
    return respond(native.encode(plane.infer(decoded), decoded))
