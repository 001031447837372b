"""POST /v2/models/mnist[/versions/{v}]/infer, answered ahead of Flask as plain WSGI.

Batch-1 inference is the call services make in a loop, and Flask's request context, URL
adapter, hooks and Response object are a large share of its CPU (bench/results.md, "Where a
batch-1 request goes", and the v2json batch 1 rows of "HTTP under load").
So these two routes are a WSGI middleware (`app.wsgi_app`, Flask's documented place for one)
doing what the Flask route did: bearer token, body limits and deadlines, codec and data plane,
errors as JSON `{"error": ...}`, the request metrics. Flask keeps the URL rules (registered in
routes/v2.py without a view), so other methods get its 405 and OpenAPI lists them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from werkzeug.wsgi import get_content_length

from server import metrics
from server.auth import check_token
from server.body import read_limited
from server.errors import ApiError
from server.http_errors import INTERNAL_ERROR
from server.protocols import v2
from server.protocols.common import Encoded, error_answer
from server.services import Services
from shared.config import MODEL_NAME

log = logging.getLogger(__name__)
SERVED_RULE = f"/v2/models/{MODEL_NAME}/infer"
VERSION_RULE = f"/v2/models/{MODEL_NAME}/versions/<int:version>/infer"  # Flask's spelling: the metrics label
_PATH = re.compile(rf"/v2/models/{re.escape(MODEL_NAME)}(?:/versions/([0-9]+))?/infer")
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class InferRoute:
    """WSGI middleware: the v2 infer POSTs here, every other request to `flask_app`."""

    def __init__(self, flask_app: WsgiApp, found: Services, max_body_bytes: int) -> None:
        self.flask_app = flask_app
        self.found = found
        self.max_body_bytes = max_body_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        match = _PATH.fullmatch(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        if match is None:
            return self.flask_app(environ, start_response)
        started = time.perf_counter()
        version = int(match[1]) if match[1] is not None else None
        status, (body, headers) = self._answer(environ, version)
        rule = SERVED_RULE if version is None else VERSION_RULE
        metrics.REQUESTS.labels("POST", rule, str(status)).inc()
        metrics.LATENCY.labels(rule).observe(time.perf_counter() - started)
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [*headers.items(), ("Content-Length", str(len(body)))])
        return [body]

    def _answer(self, environ: dict[str, Any], version: int | None) -> tuple[int, Encoded]:
        try:
            check_token(environ.get("HTTP_AUTHORIZATION", ""), self.found.config.auth_token)
            data = read_limited(environ, get_content_length(environ), self.max_body_bytes)
            plane = self.found.plane
            decoded = v2.decode(data, environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"), plane.max_batch_size,
                                version)
            return 200, v2.encode(plane.infer(decoded), decoded)
        except ApiError as error:
            return error.status, error_answer(error.message, error.headers, **error.extra)
        except Exception as error:  # never expected: tests prove bad input gets a 4xx
            log.exception("unhandled error: %s", error)
            return 500, error_answer(INTERNAL_ERROR)
