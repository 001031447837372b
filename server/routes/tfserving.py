"""TensorFlow Serving REST API (`/v1/models/mnist...`) over server.protocols.tfserving."""

from __future__ import annotations

from flask import Blueprint

from server.auth import require_token
from server.params import body_bytes, respond
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


def _predict(version: int | None):
    plane = services().plane
    decoded = tfserving.decode(body_bytes(), plane.max_batch_size, version)
    return respond(tfserving.encode(plane.infer(decoded), decoded))


@bp.post(PREFIX + ":predict")
@require_token
def predict():
    return _predict(None)


@bp.post(PREFIX + "/versions/<int:version>:predict")
@require_token
def predict_version(version: int):
    return _predict(version)
