"""The gRPC process's request-log lines (server.request_log's fields and format, protocol `grpc`).

`call_id` and `write_line` are what every call's line is made of: the GRPCInferenceService calls write theirs
in `grpc_server._guarded`. The services grpcio implements for us, `grpc.health.v1.Health` (Check, Watch) and
server reflection, are not our code, so `OtherServicesLog`, a server interceptor, gives each of their calls
its one line: with the request id (metadata `x-request-id` in and out, as for every call), the gRPC code, the
latency and the protobuf bytes each way. A streaming call (Watch, ServerReflectionInfo) is one line, written
when grpcio ends the call; a call the client cancelled before the service ended it is logged CANCELLED.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from server import request_log


def metadata(context: grpc.ServicerContext, key: str) -> str:
    """One invocation metadata value ("" when absent)."""
    for name, value in context.invocation_metadata():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


def call_id(context: grpc.ServicerContext, trace_id: str | None = None) -> str:
    """This call's request id (`request_log.choose_id` on metadata `x-request-id` / `traceparent`), sent back
    as trailing metadata `x-request-id` with the answer, an abort or the end of a stream."""
    rid = request_log.choose_id(metadata(context, "x-request-id"), metadata(context, "traceparent"), trace_id)
    context.set_trailing_metadata((("x-request-id", rid),))
    return rid


def write_line(rid: str, route: str, code: grpc.StatusCode, started: float, received: int, sent: int,
               context: grpc.ServicerContext, **notes: Any) -> dict[str, Any]:
    """One call's line: method (the last part of the route), gRPC code name, peer and x-forwarded-for."""
    return request_log.write(request_log.log, rid, route.rsplit("/", 1)[-1], route, code.name, started, received,
                             sent, {**notes, "protocol": "grpc"}, context.peer(),
                             metadata(context, "x-forwarded-for") or None)


def _size(message: Any) -> int:
    return message.ByteSize() if hasattr(message, "ByteSize") else 0


class _Call:
    """One call of another service: counts bytes each way, writes its line once grpcio ends the call."""

    def __init__(self, route: str, context: grpc.ServicerContext) -> None:
        self.started = time.perf_counter()
        self.route, self.context = route, context
        self.rid = call_id(context)
        self.received = self.sent = 0
        self.code: grpc.StatusCode | None = None  # set when the service ended the call; None: the client did
        self._written = threading.Lock()
        context.add_callback(self.finish)  # grpcio calls it when the call is over, whoever ended it

    def ended(self) -> None:
        self.code = self.context.code() or grpc.StatusCode.OK  # set_code / abort, else OK

    def failed(self) -> None:
        self.code = self.context.code() or grpc.StatusCode.UNKNOWN  # what grpcio answers an exception with

    def finish(self) -> None:
        if self._written.acquire(blocking=False):
            write_line(self.rid, self.route, self.code or grpc.StatusCode.CANCELLED, self.started, self.received,
                       self.sent, self.context)

    def run(self, behavior: Callable[[], Any], streams_out: bool) -> Any:
        """The service's answer: one message (the call is over), an iterator of them (a stream, over when it
        is), or None from a non-blocking stream, which answers through `send`."""
        try:
            answer = behavior()
        except Exception:
            self.failed()
            raise
        if streams_out:
            return None if answer is None else self.responses(answer)
        self.sent = _size(answer)
        self.ended()
        return answer

    def requests(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for message in iterator:
            self.received += _size(message)
            yield message

    def responses(self, iterator: Iterator[Any]) -> Iterator[Any]:
        try:
            for message in iterator:
                self.sent += _size(message)
                yield message
        except Exception:
            self.failed()
            raise
        self.ended()

    def send(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """A non-blocking stream's send_response_callback (health Watch): None ends the stream."""

        def send(message: Any) -> None:
            if message is None:
                self.ended()
            else:
                self.sent += _size(message)
            callback(message)

        return send


def _unary(route: str, behavior: Callable[..., Any], streams_out: bool) -> Callable[..., Any]:
    """A unary-request behavior (Check, Watch) that logs its call."""

    def logged(request: Any, context: grpc.ServicerContext, send_response_callback: Any = None) -> Any:
        call = _Call(route, context)
        call.received = _size(request)
        if send_response_callback is not None:  # grpcio's non-blocking stream: answers come through the callback
            send = call.send(send_response_callback)
            return call.run(lambda: behavior(request, context, send_response_callback=send), streams_out)
        return call.run(lambda: behavior(request, context), streams_out)

    return logged


def _streaming(route: str, behavior: Callable[..., Any], streams_out: bool) -> Callable[..., Any]:
    """A stream-request behavior (reflection's ServerReflectionInfo) that logs its call."""

    def logged(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        call = _Call(route, context)
        return call.run(lambda: behavior(call.requests(requests), context), streams_out)

    return logged


def _logged(handler: grpc.RpcMethodHandler, route: str) -> grpc.RpcMethodHandler:
    kind = ("stream" if handler.request_streaming else "unary") + "_" + \
           ("stream" if handler.response_streaming else "unary")
    behavior = getattr(handler, kind)
    wrap = _streaming if handler.request_streaming else _unary
    logged = wrap(route, behavior, handler.response_streaming)
    for flag in ("experimental_non_blocking", "experimental_thread_pool"):  # grpcio reads these off the behavior
        if hasattr(behavior, flag):
            setattr(logged, flag, getattr(behavior, flag))
    return handler._replace(**{kind: logged})  # RpcMethodHandler is a namedtuple in grpcio


class OtherServicesLog(grpc.ServerInterceptor):
    """One request-log line per call of every service but `own` (which writes its own lines)."""

    def __init__(self, own: str) -> None:
        self._own = f"/{own}/"

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:  # no such method: UNIMPLEMENTED, as grpcio says it, and a line for it
            return grpc.unary_unary_rpc_method_handler(_unimplemented)
        if details.method.startswith(self._own):
            return handler
        return _logged(handler, details.method)


def _unimplemented(request: bytes, context: grpc.ServicerContext) -> None:
    """A method nothing serves: logged under `unmatched` (the raw name would be a client's free text)."""
    call = _Call(request_log.UNMATCHED, context)
    call.received = len(request)
    call.code = grpc.StatusCode.UNIMPLEMENTED
    context.abort(call.code, f"Method not found! (request id {call.rid})")
