"""Open Inference Protocol v2 (`/v2...`: KServe, Triton's clients) over server.protocols.v2.

Health, server and model metadata, readiness and infer, for the served version and for a
numbered one (`/v2/models/mnist/versions/{v}/...`, the version folders of the store).
"""

from __future__ import annotations

from flask import Blueprint, request

from server.auth import require_token
from server.errors import Unavailable
from server.params import body_bytes, respond
from server.protocols import v2
from server.services import services
from shared.config import MODEL_NAME

bp = Blueprint("v2", __name__)
MODEL = f"/v2/models/{MODEL_NAME}"
VERSION = MODEL + "/versions/<int:version>"


@bp.get("/v2")
def server_metadata():
    return v2.server_metadata()


@bp.get("/v2/health/live")
def live():
    return {"live": True}


@bp.get("/v2/health/ready")
def ready():
    manager = services().manager
    if manager.current is None:
        raise Unavailable(manager.not_ready_reason(), ready=False)
    return {"ready": True}


@bp.get(MODEL)
@bp.get(VERSION)
def model_metadata(version: int | None = None):
    found = services()
    if version is not None:
        found.plane.model(version)  # 404 for a version the store does not hold
    platform = "onnxruntime_onnx" if found.config.backend == "onnx" else "tensorflow_keras"
    return v2.model_metadata(found.manager.store.versions(), platform)


@bp.get(MODEL + "/ready")
@bp.get(VERSION + "/ready")
def model_ready(version: int | None = None):
    manager = services().manager
    if version is None and manager.current is None:
        raise Unavailable(manager.not_ready_reason(), name=MODEL_NAME, ready=False)
    if version is not None:
        services().plane.model(version)  # 404 unknown, 503 when it fails to load
    return {"name": MODEL_NAME, "ready": True}


@bp.post(MODEL + "/infer")
@bp.post(VERSION + "/infer")
@require_token
def infer(version: int | None = None):
    plane = services().plane
    decoded = v2.decode(body_bytes(), request.headers.get(v2.HEADER_LENGTH), plane.max_batch_size, version)
    return respond(v2.encode(plane.infer(decoded), decoded))
