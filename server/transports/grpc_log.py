"""The gRPC process's request-log lines (server.request_log's fields and format, protocol `grpc`).

`call_id` and `write_line` are what every call's line is made of: the GRPCInferenceService calls write theirs
in `grpc_server._guarded`. The services grpcio implements for us, `grpc.health.v1.Health` (Check, Watch) and
server reflection (their asyncio versions), are not our code, so `OtherServicesLog`, a `grpc.aio` server
interceptor, gives each of their calls its one line: with the request id (metadata `x-request-id` in and out,
as for every call), the gRPC code, the latency and the protobuf bytes each way. A streaming call (Watch,
ServerReflectionInfo) is one line, written when grpcio ends the call; a call the client cancelled before the
service ended it is logged CANCELLED.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from server import request_log

Context = grpc.aio.ServicerContext


def metadata(context: Context, key: str) -> str:
    """One invocation metadata value ("" when absent)."""
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode("latin-1")
    return ""


def call_id(context: Context, trace_id: str | None = None) -> str:
    """This call's request id (`request_log.choose_id` on metadata `x-request-id` / `traceparent`), sent back
    as trailing metadata `x-request-id` with the answer, an abort or the end of a stream."""
    rid = request_log.choose_id(metadata(context, "x-request-id"), metadata(context, "traceparent"), trace_id)
    context.set_trailing_metadata((("x-request-id", rid),))
    return rid


def write_line(rid: str, route: str, code: grpc.StatusCode, started: float, received: int, sent: int,
               context: Context, **notes: Any) -> dict[str, Any]:
    """One call's line: method (the last part of the route), gRPC code name, peer and x-forwarded-for."""
    return request_log.write(request_log.log, rid, route.rsplit("/", 1)[-1], route, code.name, started, received,
                             sent, {**notes, "protocol": "grpc"}, context.peer(),
                             metadata(context, "x-forwarded-for") or None)


def _size(message: Any) -> int:
    return message.ByteSize() if hasattr(message, "ByteSize") else 0


class _Call:
    """One call of another service: counts bytes each way, writes its line once grpcio ends the call."""

    def __init__(self, route: str, context: Context) -> None:
        self.started = time.perf_counter()
        self.route, self.context = route, context
        self.rid = call_id(context)
        self.received = self.sent = 0
        self.code: grpc.StatusCode | None = None  # set when the service ended the call; None: the client did
        self._written = False
        context.add_done_callback(self.finish)  # grpcio calls it when the call is over, whoever ended it

    def ended(self) -> None:
        self.code = self.context.code() or grpc.StatusCode.OK  # set_code / abort, else OK

    def failed(self) -> None:
        self.code = self.context.code() or grpc.StatusCode.UNKNOWN  # what grpcio answers an exception with

    def finish(self, _context: Any = None) -> None:
        if not self._written:  # the loop's thread only: no lock
            self._written = True
            write_line(self.rid, self.route, self.code or grpc.StatusCode.CANCELLED, self.started, self.received,
                       self.sent, self.context)

    async def answer(self, behavior: Awaitable[Any]) -> Any:
        """A unary answer, or a stream answered through `context.write` (None when the stream is over)."""
        try:
            answer = await behavior
        except Exception:  # AbortError too: context.code() holds the aborted code
            self.failed()
            raise
        self.sent += _size(answer)
        self.ended()
        return answer

    async def responses(self, iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        try:
            async for message in iterator:
                self.sent += _size(message)
                yield message
        except Exception:
            self.failed()
            raise
        self.ended()

    async def requests(self, iterator: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for message in iterator:
            self.received += _size(message)
            yield message


class _Writes:
    """The context a stream answered by `context.write` (health Watch) gets: counts what it writes."""

    def __init__(self, call: _Call, context: Context) -> None:
        self._call, self._context = call, context

    async def write(self, message: Any) -> None:
        self._call.sent += _size(message)
        await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _logged_behavior(route: str, behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
    """The behavior with its line; an async generator stays one (grpcio tells the two kinds apart by that)."""
    if inspect.isasyncgenfunction(behavior):
        async def streamed(request: Any, context: Context) -> AsyncIterator[Any]:
            call = _Call(route, context)
            if request_streaming:
                request = call.requests(request)
            else:
                call.received = _size(request)
            async for message in call.responses(behavior(request, context)):
                yield message

        return streamed

    async def answered(request: Any, context: Context) -> Any:
        call = _Call(route, context)
        if request_streaming:
            request = call.requests(request)
        else:
            call.received = _size(request)
        return await call.answer(behavior(request, _Writes(call, context)))

    return answered


def _logged(handler: grpc.RpcMethodHandler, route: str) -> grpc.RpcMethodHandler:
    kind = ("stream" if handler.request_streaming else "unary") + "_" + \
           ("stream" if handler.response_streaming else "unary")
    logged = _logged_behavior(route, getattr(handler, kind), handler.request_streaming)
    return handler._replace(**{kind: logged})  # RpcMethodHandler is a namedtuple in grpcio


class OtherServicesLog(grpc.aio.ServerInterceptor):
    """One request-log line per call of every service but `own` (which writes its own lines)."""

    def __init__(self, own: str) -> None:
        self._own = f"/{own}/"

    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:  # no such method: UNIMPLEMENTED, as grpcio says it, and a line for it
            return grpc.unary_unary_rpc_method_handler(_unimplemented)
        if details.method.startswith(self._own):
            return handler
        return _logged(handler, details.method)


async def _unimplemented(request: bytes, context: Context) -> None:
    """A method nothing serves: logged under `unmatched` (the raw name would be a client's free text)."""
    call = _Call(request_log.UNMATCHED, context)
    call.received = len(request)
    call.code = grpc.StatusCode.UNIMPLEMENTED
    await context.abort(call.code, f"Method not found! (request id {call.rid})")
