"""One structured log line per HTTP request, written by WSGI middleware around the whole app.

The gRPC process writes its calls' lines with the same `choose_id` and `write`
(server.transports.grpc_server), so both transports' lines have the same fields and format.

It sits outside everything (Flask and the predict pipeline ahead of it), so every route gets its
line whatever answers it. The request id is an incoming `X-Request-ID` (kept when it is a short
token), else the trace id of a W3C `traceparent`, else a new random one; it is sent back as
`X-Request-ID` on every response and added as `request_id` to every JSON error body, so the id a
client saw finds its line in one grep.

What only the code inside knows (route template, model version, images, protocol) is handed out
through the WSGI environ with `note()`: Flask's routes get their URL rule from an after_request
hook here; the predict pipeline calls `note()` itself. A path nothing matched is logged as
`unmatched` (the same label as the metrics), never the raw path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from flask import Flask, Response, request

from server import tracing
from shared import logs

log = logging.getLogger("server.requests")

REQUEST_ID = "mnist.request_id"
_NOTES = "mnist.request_log"
UNMATCHED = "unmatched"
MESSAGE = "%s %s %s %.1fms"  # method, route, status, latency: a line's message
# A kept id goes into log lines and response headers as is: only a short run of safe characters.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
_ERROR_BODY_LIMIT = 64 * 1024  # error bodies are small JSON objects; anything bigger passes untouched

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def note(environ: dict[str, Any], **fields: Any) -> None:
    """Add fields (route, model_version, images, protocol) to this request's line."""
    notes = environ.get(_NOTES)
    if notes is not None:
        notes.update(fields)


def choose_id(given: str, traceparent: str, trace_id: str | None = None) -> str:
    """The client's request id when it is a short safe token, else its traceparent's trace id, else this
    request's trace (tracing on) or a new random id. HTTP headers and gRPC metadata both come here."""
    if given and _SAFE_ID.fullmatch(given):
        return given
    parent = _TRACEPARENT.fullmatch(traceparent.strip().lower()) if traceparent else None
    if parent is not None and parent[1] != "0" * 32:
        return parent[1]
    return trace_id or os.urandom(16).hex()


def request_id(environ: dict[str, Any], trace_id: str | None = None) -> str:
    """This HTTP request's id: X-Request-ID, else traceparent's trace id, else a new one (`choose_id`)."""
    return choose_id(environ.get("HTTP_X_REQUEST_ID", ""), environ.get("HTTP_TRACEPARENT", ""), trace_id)


def write(logger: logging.Logger, rid: str, method: str, route: str, status: int | str, started: float,
          received: int, sent: int, notes: dict[str, Any], client: str | None,
          forwarded_for: str | None) -> dict[str, Any]:
    """Write one request's line (every transport's): its fields, in this order, then any other notes."""
    latency_ms = round((time.perf_counter() - started) * 1000, 3)
    fields = {
        "request_id": rid,
        "method": method,
        "route": route,
        "status": status,
        "latency_ms": latency_ms,
        "bytes_in": received,
        "bytes_out": sent,
        "model_version": notes.pop("model_version", None),
        "images": notes.pop("images", None),
        "protocol": notes.pop("protocol", None),
        "client": client,
        "forwarded_for": forwarded_for,
        **notes,
    }
    if logger.isEnabledFor(logging.INFO) and not _write_direct(logger, method, route, status, latency_ms, fields):
        logger.handle(_Line(logger.name, (method, route, status, latency_ms), fields))
    return fields


def _write_direct(logger: logging.Logger, method: str, route: str, status: int | str, latency_ms: float,
                  fields: dict[str, Any]) -> bool:
    """The line in JSON straight to the one handler that would print it (shared.logs.sole_line_handler): the
    same object JsonFormatter writes, without a LogRecord or logging's handler chain, which were most of a
    line's cost (bench/results.md, "Request log and tracing cost"). False: go through logging instead."""
    handler = logs.sole_line_handler(logger)
    if handler is None or type(handler.formatter) is not logs.JsonFormatter:
        return False
    line = logs.json_line(time.time(), "INFO", logger.name, _pid, MESSAGE % (method, route, status, latency_ms),
                          fields)
    try:
        text = orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # a note orjson cannot write (a recursive default): logging's encoder says what
        return False
    return handler.write_line(text)


_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)  # gunicorn's workers: each line carries its own worker's pid


class _Line(logging.LogRecord):
    """A request line's record, made without LogRecord.__init__'s lookups: the caller's file and line (a stack
    walk), a getpid system call, the process name: a large share of the line's cost (profiled with cProfile)."""

    def __init__(self, name: str, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        now = time.time()
        self.name, self.msg, self.args, self.fields = name, MESSAGE, args, fields
        self.levelname, self.levelno = "INFO", logging.INFO
        self.pathname, self.filename, self.module, self.lineno, self.funcName = __file__, "request_log.py", \
            "request_log", 0, "write"
        self.exc_info = self.exc_text = self.stack_info = None
        self.created, self.msecs = now, int(now * 1000) % 1000 + 0.0
        self.relativeCreated = (now - logging._startTime) * 1000
        self.thread, self.threadName = threading.get_ident(), threading.current_thread().name
        self.process, self.processName = _pid, "MainProcess"


class _CountingInput:
    """wsgi.input, counting the bytes the app reads (a chunked body has no Content-Length)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.count = 0

    def read(self, *args: Any) -> bytes:
        data = self._stream.read(*args)
        self.count += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data = self._stream.readline(*args)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        size = self._stream.readinto(buffer) or 0
        self.count += size
        return size

    def readlines(self, *args: Any) -> list[bytes]:
        lines = self._stream.readlines(*args)
        self.count += sum(map(len, lines))
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self.count += len(line)
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _LoggedBody:
    """The response iterable: counts bytes out and logs the line when the server closes it."""

    def __init__(self, body: Iterable[bytes], finish: Callable[[int], None]) -> None:
        self._body = body
        self._finish = finish
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._finish(self.sent)


def _with_id(body: bytes, rid: str) -> bytes:
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    if not isinstance(answer, dict):
        return body
    answer["request_id"] = rid
    return json.dumps(answer).encode()


def _is_json(headers: list[tuple[str, str]]) -> bool:
    return any(name.lower() == "content-type" and value.startswith("application/json") for name, value in headers)


class RequestLog:
    """WSGI middleware: the request id in and out, and one log line per request."""

    def __init__(self, app: WsgiApp, logger: logging.Logger = log) -> None:
        self.app = app
        self.log = logger

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        method = environ.get("REQUEST_METHOD", "")
        traced = tracing.ServerSpan(environ, method, {"http.request.method": method}) if tracing.enabled() else None
        rid = environ[REQUEST_ID] = request_id(environ, traced.trace_id if traced is not None else None)
        notes: dict[str, Any] = {}
        environ[_NOTES] = notes
        stream = environ.get("wsgi.input")
        counted = environ["wsgi.input"] = _CountingInput(stream) if stream is not None else None
        state: dict[str, Any] = {"status": 500, "returned": False}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            state["status"] = int(status[:3])
            headers.append(("X-Request-ID", rid))
            if state["status"] >= 400 and not state["returned"] and _is_json(headers):
                state["held"] = (status, headers, exc_info)  # answered once the body has the id
                return lambda _data: None
            return start_response(status, headers, exc_info)

        def finish(sent: int) -> None:
            fields = self._write(environ, notes, rid, state["status"], started, counted.count if counted else 0, sent)
            if traced is not None:
                traced.end({"http.route": fields["route"], "http.response.status_code": fields["status"]}, fields,
                           error=fields["status"] >= 500, name=f"{method} {fields['route']}")

        try:
            body = self.app(environ, start)
        except BaseException:
            finish(0)
            raise
        finally:
            if traced is not None:
                traced.detach()
        state["returned"] = True
        held = state.pop("held", None)
        if held is not None:
            status, headers, exc_info = held
            try:
                data = b"".join(body)
            finally:
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            if len(data) <= _ERROR_BODY_LIMIT:
                data = _with_id(data, rid)
            headers = [(name, value) for name, value in headers if name.lower() != "content-length"]
            start_response(status, [*headers, ("Content-Length", str(len(data)))], exc_info)
            body = [data] if environ.get("REQUEST_METHOD") != "HEAD" else []
        return _LoggedBody(body, finish)

    def _write(self, environ: dict[str, Any], notes: dict[str, Any], rid: str, status: int, started: float,
               received: int, sent: int) -> dict[str, Any]:
        return write(self.log, rid, environ.get("REQUEST_METHOD", ""), notes.pop("route", UNMATCHED), status,
                     started, received, sent, notes, environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"))


def install(app: Flask) -> None:
    """Wrap everything `app.wsgi_app` is now (call last) and give Flask's routes their template."""

    @app.after_request
    def route_template(response: Response) -> Response:
        rule = request.url_rule
        note(request.environ, route=rule.rule if rule is not None else UNMATCHED)
        return response

    app.wsgi_app = RequestLog(app.wsgi_app)  # type: ignore[method-assign]
