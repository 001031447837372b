"""Every error leaves the server as JSON `{"error": "<what was wrong>"}` with a 4xx/5xx status.

Code raises `server.errors.ApiError` (or a subclass); Werkzeug's own HTTP errors (404, 405,
413, ...) are turned into the same JSON shape, and a last-resort handler keeps an unexpected
bug from answering with an HTML page (it logs the traceback and answers a plain JSON 500).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from server import body
from server.errors import ApiError
from server.protocols.common import error_answer
from shared.config import MODEL_NAME

log = logging.getLogger(__name__)
INTERNAL_ERROR = "internal server error (see the server log)"


def error_response(message: str, status: int, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body, answer_headers = error_answer(message, headers, **extra)
    return Response(body, status=status, headers=answer_headers)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return error_response(error.message, error.status, error.headers, **error.extra)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_error: RequestEntityTooLarge):  # Werkzeug's own, from the form parser (multipart uploads)
        return error_response(body.too_large(app.config["MAX_CONTENT_LENGTH"]).message, 413)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        headers = dict(error.get_headers())
        headers.pop("Content-Type", None)
        message = f"{error.name}: {error.description}" if error.description else error.name
        if isinstance(error, NotFound):
            message = unknown_model_hint(request.path) or message
        return error_response(message, error.code or 500, headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        # Never expected: tests prove that bad input gets a 4xx. Log the traceback for the operator.
        log.exception("unhandled error: %s", error)
        return error_response(INTERNAL_ERROR, 500)


# /v1/models/<name>... (TF Serving) and /v2/models/<name>... (Open Inference Protocol v2): a client's default
# name (TF Serving's `model`, Triton's model repository names) is the usual reason for a 404 on these paths.
_MODEL_PATH = re.compile(r"/(?P<api>v1|v2)/models/(?P<name>[^/:]+)(?P<rest>.*)")
_ROUTE_TO_USE = {"v1": f"POST /v1/models/{MODEL_NAME}:predict (status: GET /v1/models/{MODEL_NAME})",
                 "v2": f"POST /v2/models/{MODEL_NAME}/infer (metadata: GET /v2/models/{MODEL_NAME})"}


def unknown_model_hint(path: str) -> str | None:
    """For a path naming a model this server does not serve: which model it serves and the route to use."""
    matched = _MODEL_PATH.fullmatch(path)
    if matched is None or matched["name"] == MODEL_NAME:
        return None
    return (f"model {matched['name']!r} not found: this server serves the model {MODEL_NAME!r}; "
            f"use {_ROUTE_TO_USE[matched['api']]}")
