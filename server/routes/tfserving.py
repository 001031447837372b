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


def _failed() -> dict[int, str]:
    return {failure["version"]: failure["error"] for failure in services().manager.failures()}


@bp.get(PREFIX)
def model_status():
    served = services().plane.model()  # 503 with the reason before a model is served
    return tfserving.model_status([served.version], _failed())


@bp.get(PREFIX + "/versions/<int:version>")
def version_status(version: int):
    failed = _failed()
    if version in failed:
        return tfserving.model_status([], {version: failed[version]})
    services().plane.model(version)  # 404 when unknown; loads it on demand otherwise
    return tfserving.model_status([version], {})


@bp.get(PREFIX + "/metadata")
def metadata():
    return tfserving.metadata(services().plane.model().version)


@bp.get(PREFIX + "/versions/<int:version>/metadata")
def version_metadata(version: int):
    return tfserving.metadata(services().plane.model(version).version)


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
