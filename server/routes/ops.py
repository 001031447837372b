"""Operations: liveness, readiness, Prometheus metrics, model status and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from server import metrics
from server.errors import Unavailable
from server.openapi import openapi_document
from server.services import services
from shared.model_store import ModelStore, ModelStoreError

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "alive"}


@bp.get("/readyz")
def readyz():
    manager = services().manager
    current = manager.current
    if current is None:
        raise Unavailable(manager.not_ready_reason(), ready=False)
    return {"ready": True, "model_version": current.version}


@bp.get("/metrics")
def prometheus():
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def _version_summary(store: ModelStore, version: int) -> dict[str, Any]:
    try:
        metadata = store.metadata(version)
    except ModelStoreError:
        metadata = {}
    return {"version": version, "created": metadata.get("created"), "test_accuracy": metadata.get("test_accuracy")}


@bp.get("/models")
def models():
    found = services()
    manager, current = found.manager, found.manager.current
    return {
        "served_version": current.version if current else None,
        "pinned": found.config.pinned_version,
        "backend": found.config.backend,
        "versions": [_version_summary(manager.store, version) for version in manager.store.versions()],
        "failed": manager.failures(),
        "metadata": current.metadata if current else None,
    }


@bp.get("/openapi.json")
def openapi():
    return openapi_document(current_app)
