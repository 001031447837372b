"""TensorFlow Serving REST API (`/v1/models/mnist...`) over server.protocols.tfserving: status and metadata.

`:predict` goes through the one inference path (server.pipeline)."""

from __future__ import annotations

from flask import Blueprint

from server.protocols import tfserving
from server.services import services
from shared.config import MODEL_NAME

bp = Blueprint("tfserving", __name__)
PREFIX = f"/v1/models/{MODEL_NAME}"


@bp.get(PREFIX)
def model_status():
    plane = services().plane
    served = plane.model()  # 503 with the reason before a model is served
    return tfserving.model_status([served.version], plane.failed())


@bp.get(PREFIX + "/versions/<int:version>")
def version_status(version: int):
    plane = services().plane
    failed = plane.failed()
    if version in failed:
        return tfserving.model_status([], {version: failed[version]})
    return tfserving.model_status([plane.known_version(version)], {})  # 404 when unknown; loads nothing


@bp.get(PREFIX + "/metadata")
def metadata():
    return tfserving.metadata(services().plane.model().version)


@bp.get(PREFIX + "/versions/<int:version>/metadata")
def version_metadata(version: int):
    return tfserving.metadata(services().plane.known_version(version))

