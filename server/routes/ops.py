"""Operations: liveness, readiness, Prometheus metrics, model status and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from server import metrics
from server.errors import Unavailable
from server.openapi import openapi_document
from server.services import services

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


@bp.get("/models")
def models():
    return services().manager.status()


@bp.get("/openapi.json")
def openapi():
    return openapi_document(current_app)
