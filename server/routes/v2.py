"""Open Inference Protocol v2 (`/v2...`: KServe, Triton's clients) over server.protocols.v2.

Health, server and model metadata and readiness, for the served version and for a numbered one
(`/v2/models/mnist/versions/{v}/...`, the version folders of the store). Infer goes through the
one inference path (server.pipeline).
"""

from __future__ import annotations

from flask import Blueprint

from server.errors import Unavailable
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
    services().plane.ready()
    return {"ready": True}


@bp.get(MODEL)
@bp.get(VERSION)
def model_metadata(version: int | None = None):
    found = services()
    if version is not None:
        found.plane.known_version(version)  # 404 for a version the store does not hold; loads nothing
    platform = "onnxruntime_onnx" if found.config.backend == "onnx" else "tensorflow_keras"
    return v2.model_metadata(found.plane.versions(), platform)


@bp.get(MODEL + "/ready")
@bp.get(VERSION + "/ready")
def model_ready(version: int | None = None):
    plane = services().plane
    if version is None:
        plane.ready(name=MODEL_NAME)
        return {"name": MODEL_NAME, "ready": True}
    failed = plane.failed()
    if version in failed:
        raise Unavailable(f"model version {version} failed to load: {failed[version]}", name=MODEL_NAME,
                          ready=False)
    plane.known_version(version)  # 404 unknown; a version in the store is loaded when inference asks for it
    return {"name": MODEL_NAME, "ready": True}
