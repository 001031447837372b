"""The one inference path: every predict route, whatever its wire format, goes through `Pipeline`.

    route table -> auth -> bounded body read -> codec.decode -> DataPlane.infer -> codec.encode
                -> one error mapping -> one metrics call

`INFER_ROUTES` is the table (native `/predict`, TF Serving `:predict` and v2 `infer`, each on the
served and, where the format has one, on a numbered version); the OpenAPI document lists these
paths from it and `url_rules` gives them to anyone listing the app's URLs. A `Codec` turns a body and
its headers into an `InferRequest` and a result back into bytes; `CODECS` holds one per format, and
format-specific fields stay inside each codec.

It runs as WSGI middleware ahead of Flask (`app.wsgi_app`, Flask's documented place for one):
batch-1 inference is the call services make in a loop, and Flask's request context, URL adapter,
hooks and Response object are a large share of its CPU (bench/results.md, "Where a batch-1 request
goes"). Flask keeps the pages, samples and operations routes.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from http import HTTPStatus
from typing import Any, Protocol

from werkzeug.wsgi import get_content_length

from server import compute, metrics, request_log, tracing
from server.auth import check_token
from server.body import BodyReader
from server.errors import ApiError
from server.http_errors import INTERNAL_ERROR
from server.protocols import native, tfserving, v2
from server.protocols.common import Encoded, ImageFound, InferRequest, InferResult, error_answer, refusing_images
from server.services import Services
from shared.config import MODEL_NAME

log = logging.getLogger(__name__)
# A body this small is decoded on the worker's loop: parsing it costs less than handing it to a compute thread
# and back (bench/results.md, "Inline model runs and decoding"), and whatever it holds, its parse is bounded by
# its size, about as long as an inline model run; an image in it is still decoded on a compute thread (`decode`).
INLINE_BODY_BYTES = 16 * 1024
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Codec(Protocol):
    """One wire format: request bytes and headers -> InferRequest; InferResult -> answer bytes and headers."""

    def decode(self, body: bytes, headers: WsgiHeaders, version: int | None,
               max_batch_size: int) -> InferRequest: ...

    def encode(self, result: InferResult, request: InferRequest) -> Encoded: ...


class NativeCodec:
    def decode(self, body: bytes, headers: WsgiHeaders, version: int | None,
               max_batch_size: int) -> InferRequest:
        return native.decode(body, headers.get("Content-Type"), max_batch_size)

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        return native.encode(result, request)


class TfServingCodec:
    def decode(self, body: bytes, headers: WsgiHeaders, version: int | None,
               max_batch_size: int) -> InferRequest:
        return tfserving.decode(body, max_batch_size, version)

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        return tfserving.encode(result, request)


class V2Codec:
    def decode(self, body: bytes, headers: WsgiHeaders, version: int | None,
               max_batch_size: int) -> InferRequest:
        return v2.decode(body, headers.get(v2.HEADER_LENGTH), max_batch_size, version)

    def encode(self, result: InferResult, request: InferRequest) -> Encoded:
        return v2.encode(result, request)


CODECS: dict[str, Codec] = {"native": NativeCodec(), "tfserving": TfServingCodec(), "v2": V2Codec()}


def decode(codec: Codec, body: bytes, headers: WsgiHeaders, version: int | None,
           max_batch_size: int) -> InferRequest:
    """`codec.decode` on the loop for a small body without images, else on a compute thread (server/compute.py)."""
    if len(body) <= INLINE_BODY_BYTES and compute.on_loop():
        compute.take_turn()
        try:
            with refusing_images():
                return codec.decode(body, headers, version, max_batch_size)
        except ImageFound:
            pass  # its images are decoded on a compute thread, the body parsed again there (it is small)
    return compute.offload(codec.decode, body, headers, version, max_batch_size)


@dataclass(frozen=True)
class InferRoute:
    rule: str  # Flask's spelling (`<int:version>`): the metrics label and, as {version}, the OpenAPI path
    codec: str  # a key of CODECS

    @property
    def path(self) -> str:
        """The OpenAPI spelling of the rule."""
        return self.rule.replace("<int:version>", "{version}")


TF_MODEL = f"/v1/models/{MODEL_NAME}"
V2_MODEL = f"/v2/models/{MODEL_NAME}"
INFER_ROUTES = (
    InferRoute("/predict", "native"),
    InferRoute(TF_MODEL + ":predict", "tfserving"),
    InferRoute(TF_MODEL + "/versions/<int:version>:predict", "tfserving"),
    InferRoute(V2_MODEL + "/infer", "v2"),
    InferRoute(V2_MODEL + "/versions/<int:version>/infer", "v2"),
)


def url_rules() -> list[tuple[str, set[str]]]:
    """(rule, methods) of every predict route, for lists of the app's URLs beside Flask's url_map."""
    return [(route.rule, {"POST"}) for route in INFER_ROUTES]


def _matcher(routes: tuple[InferRoute, ...]) -> Callable[[str], tuple[InferRoute, int | None] | None]:
    """PATH_INFO -> (route, version): a dict lookup for the fixed paths, one regex for the numbered ones."""
    fixed = {route.rule: (route, None) for route in routes if "<" not in route.rule}
    numbered = [route for route in routes if "<" in route.rule]
    pattern = re.compile("|".join(re.escape(route.rule).replace(re.escape("<int:version>"), "([0-9]+)")
                                  for route in numbered))

    def match(path: str) -> tuple[InferRoute, int | None] | None:
        found = fixed.get(path)
        if found is not None or "/versions/" not in path:
            return found
        versioned = pattern.fullmatch(path)
        if versioned is None:
            return None
        index = next(i for i, group in enumerate(versioned.groups()) if group is not None)
        return numbered[index], int(versioned[index + 1])

    return match


@cache
def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


class WsgiHeaders:
    """The request headers a codec reads, straight from the WSGI environ (`get` only, by HTTP name)."""

    __slots__ = ("environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.environ.get(_environ_key(name), default)


class Pipeline:
    """WSGI middleware: the predict routes here, every other request to `flask_app`."""

    def __init__(self, flask_app: WsgiApp, found: Services, bodies: BodyReader) -> None:
        self.flask_app = flask_app
        self.found = found
        self.bodies = bodies
        self.match = _matcher(INFER_ROUTES)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        matched = self.match(environ.get("PATH_INFO", ""))
        if matched is None:
            return self.flask_app(environ, start_response)
        started = time.perf_counter()
        route, version = matched
        request_log.note(environ, route=route.rule, protocol=route.codec)
        method = environ.get("REQUEST_METHOD", "")
        status, (body, headers) = self._answer(environ, method, route, version)
        metrics.observe_request("http", metrics.method_label(method), route.rule, str(status), started)
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [*headers.items(), ("Content-Length", str(len(body)))])
        return [body] if method != "HEAD" else []

    def _answer(self, environ: dict[str, Any], method: str, route: InferRoute,
                version: int | None) -> tuple[int, Encoded]:
        try:
            if method != "POST":
                raise ApiError("Method Not Allowed: The method is not allowed for the requested URL.", 405,
                               headers={"Allow": "POST"})
            check_token(environ.get("HTTP_AUTHORIZATION", ""), self.found.config.auth_token)
            with self.bodies.lease() as lease:  # the body's bytes count against the worker's budget until answered
                with tracing.span("read body"):
                    data = self.bodies.read(environ, get_content_length(environ), lease)
                return 200, self._infer(environ, route, version, data)
        except ApiError as error:
            return error.status, error_answer(error.message, error.headers, **error.extra)
        except Exception as error:  # never expected: tests prove bad input gets a 4xx
            log.exception("unhandled error: %s", error)
            return 500, error_answer(INTERNAL_ERROR)

    def _infer(self, environ: dict[str, Any], route: InferRoute, version: int | None, data: bytes) -> Encoded:
        plane, codec = self.found.plane, CODECS[route.codec]
        with tracing.span("decode", protocol=route.codec):
            decoded = decode(codec, data, WsgiHeaders(environ), version, plane.max_batch_size)
        result = plane.infer(decoded)
        request_log.note(environ, model_version=result.version, images=len(result.probabilities))
        with tracing.span("encode", protocol=route.codec):
            return codec.encode(result, decoded)
