"""Operations: liveness, readiness, Prometheus metrics, model status and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app

from server import metrics
from server.dataplane import DataPlane
from server.openapi import openapi_document
from server.services import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    return {"status": "alive"}


@bp.get("/readyz")
def readyz():
    return {"ready": True, "model_version": services().plane.ready().version}


@bp.get("/metrics")
def prometheus():
    body, content_type = metrics.render()
    return Response(body, content_type=content_type)


def _version_summary(plane: DataPlane, version: int) -> dict[str, Any]:
    metadata = plane.stored_metadata(version)
    return {"version": version, "created": metadata.get("created"), "test_accuracy": metadata.get("test_accuracy")}


@bp.get("/models")
def models():
    found = services()
    plane, current = found.plane, found.plane.current
    return {
        "served_version": current.version if current else None,
        "pinned": found.config.pinned_version,
        "backend": found.config.backend,
        "versions": [_version_summary(plane, version) for version in plane.versions()],
        "failed": plane.failures(),
        "metadata": current.metadata if current else None,
    }


@bp.get("/openapi.json")
def openapi():
    return openapi_document(current_app)
