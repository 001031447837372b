"""The Open Inference Protocol's gRPC service, `inference.GRPCInferenceService`, over the data plane.

    python -m server.transports.grpc_server      # listens on GRPC_PORT (8001)

Its own process (docs/grpc.md argues why), or GRPC_PROCESSES of them on one port under a supervisor
(server/transports/grpc_processes.py): each has one ModelManager with hot reload and one DataPlane, as a
gunicorn worker has, behind grpcio's asyncio server (`grpc.aio`, the API KServe's and MLServer's gRPC
servers use). One event loop reads and answers every call; the synchronous server handed each call from
its polling thread to a pool thread and back, and those hand-offs were most of a small call's time
(docs/grpc.md, "Benchmark"). Beside the six calls it serves the standard `grpc.health.v1.Health` service
(SERVING once a model is loaded) and server reflection, both in their asyncio versions.

What may block never runs on the loop: a ModelInfer call of more than INLINE_IMAGES images, of BYTES
images, on a version other than the served one (it may load a model) or with BATCHING on (the batcher
waits for company), and ModelReady/ModelMetadata (they read the store), run on one of GRPC_THREADS
threads. A small call on the served model is answered on the loop: handing a run of a few images to a thread
and back costs the loop more than the run itself (docs/grpc.md, "Benchmark"). A big batch runs in parts at
once on the process's other CPUs (server/parallel_model.py): the session has INFERENCE_THREADS intra-op
threads, one as compose runs it.

Per call it does what the HTTP infer route does: the bearer token (metadata `authorization`) on
ModelInfer, the codec (server.protocols.v2_grpc), the data plane, the metrics, one request-log line
(server.request_log's fields and format; the request id in and out as metadata `x-request-id`; health and
reflection calls get theirs from server.transports.grpc_log), and with OTEL_EXPORTER_OTLP_ENDPOINT set the
spans HTTP requests get (server.tracing: a server span continuing the metadata's `traceparent`, read message,
decode, queue/batch or model run, encode; a thread gets the call's context); an `ApiError` becomes the gRPC
status of its HTTP status with the same message and the request id.
Messages larger than MAX_BODY_BYTES are refused by grpcio itself with RESOURCE_EXHAUSTED before they
are decoded (no line: no call of ours ran). On SIGTERM the health
service answers NOT_SERVING, new calls are refused and calls in flight get REQUEST_TIMEOUT seconds.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
import prometheus_client
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from server import batching, metrics, tracing
from server.auth import check_token
from server.backends import load_model
from server.dataplane import DataPlane
from server.errors import ApiError
from server.http_errors import INTERNAL_ERROR
from server.model_manager import Loader, ModelManager
from server.parallel_model import Helpers, cpus, parallel_loader
from server.protocols import v2, v2_grpc
from server.protocols import v2_grpc_messages as pb
from server.transports import grpc_processes
from server.transports.grpc_log import OtherServicesLog, call_id, metadata, write_line
from shared import logs
from shared.config import Config, ConfigError

log = logging.getLogger(__name__)
HEALTH_POLL_SECONDS = 0.5
SERVICE_NAME = "mnist-grpc"  # the traces' service.name unless OTEL_SERVICE_NAME says otherwise
# A ModelInfer call of at most this many images on the served model runs on the event loop (the module's
# docstring says why; bench/results.md, "gRPC", has the figures).
INLINE_IMAGES = 8
# HTTP status of an ApiError -> gRPC status code (the mapping grpc-gateway and Triton use).
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
         404: grpc.StatusCode.NOT_FOUND, 408: grpc.StatusCode.DEADLINE_EXCEEDED,
         413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
         429: grpc.StatusCode.RESOURCE_EXHAUSTED, 503: grpc.StatusCode.UNAVAILABLE}
# Codes that mean the server failed (OpenTelemetry's gRPC conventions): the call's span is marked an error.
SERVER_ERRORS = frozenset((grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                           grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS))
T = TypeVar("T")
Answer = Callable[[Any, grpc.aio.ServicerContext], Any]
# Runs a blocking call on a thread, the caller's contextvars (the call's span) with it.
Offload = Callable[[Callable[..., T], Any, Any], Awaitable[T]]


def status_code(http_status: int) -> grpc.StatusCode:
    return CODES.get(http_status, grpc.StatusCode.INVALID_ARGUMENT if http_status < 500
                     else grpc.StatusCode.INTERNAL)


class InferenceService:
    """The six calls, each answering a message or raising ApiError; plain functions, run on the loop or a thread."""

    def __init__(self, config: Config, manager: ModelManager, plane: DataPlane) -> None:
        self.config, self.manager, self.plane = config, manager, plane

    def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.manager.current is not None)

    def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        v2_grpc.check_model(request.name)
        version = v2_grpc.version_of(request.version)
        if version is None:
            return pb.ModelReadyResponse(ready=self.plane.current is not None)
        if version in self.plane.failed():
            return pb.ModelReadyResponse(ready=False)
        # As the HTTP route: NOT_FOUND when the store lacks it; a stored version loads when inference asks.
        self.plane.known_version(version)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return v2_grpc.server_metadata()

    def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        v2_grpc.check_model(request.name)
        version = v2_grpc.version_of(request.version)
        if version is not None:
            self.plane.known_version(version)  # NOT_FOUND when the store lacks it; loads nothing
        platform = "onnxruntime_onnx" if self.config.backend == "onnx" else "tensorflow_keras"
        return v2_grpc.model_metadata(self.plane.versions(), platform)

    def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        check_token(metadata(context, "authorization"), self.config.auth_token)
        with tracing.span("decode", protocol="grpc"):
            decoded = v2_grpc.decode(request, self.plane.max_batch_size)
        result = self.plane.infer(decoded)
        with tracing.span("encode", protocol="grpc"):
            return v2_grpc.encode(result, decoded)

    def on_loop(self, method: str, request: Any) -> bool:
        """Whether this call cannot block: no store read, no model load, no batch queue, a few numeric images."""
        if method in ("ServerLive", "ServerReady", "ServerMetadata"):
            return True
        if method != "ModelInfer" or self.plane.batcher is not None:
            return False
        images = 0
        for tensor in request.inputs:  # the shapes as sent; the codec checks them (on the loop: it is cheap)
            if tensor.datatype == v2.BYTES or not tensor.shape:
                return False  # image decoding costs what the images weigh
            images += tensor.shape[0]
        current, version = self.manager.current, request.model_version
        return images <= INLINE_IMAGES and (not version or (current is not None and version == str(current.version)))


def _answer_notes(response: Any) -> dict[str, Any]:
    """The line's model version and images, read off a ModelInfer answer (other answers have neither)."""
    if not isinstance(response, pb.ModelInferResponse) or not response.outputs:
        return {}
    return {"model_version": int(response.model_version), "images": response.outputs[0].shape[0]}


def _server_span(method: str, context: grpc.aio.ServicerContext) -> tracing.ServerSpan | None:
    """The call's span while tracing is on, continuing the metadata's `traceparent`."""
    if not tracing.enabled():
        return None
    return tracing.ServerSpan(context.invocation_metadata(), f"{pb.SERVICE}/{method}",
                              {"rpc.system": "grpc", "rpc.service": pb.SERVICE, "rpc.method": method},
                              getter=tracing.METADATA)


def _parser(message_type: Any) -> Callable[[bytes], Any]:
    """The call's bytes -> its message, here rather than grpcio's request_deserializer: grpcio would parse
    untraced and answer a malformed message with a bare INTERNAL and no log line."""

    def parse(data: bytes) -> Any:
        with tracing.span("read message", bytes=len(data)):
            try:
                return message_type.FromString(data)
            except DecodeError as error:
                raise ApiError(f"not a valid {message_type.DESCRIPTOR.full_name} message: {error}", 400) from None

    return parse


def _guarded(method: str, service: InferenceService, parse: Callable[[bytes], Any], offload: Offload) -> Answer:
    """One call, the one place each call passes: its request id (metadata `x-request-id` in and out), its
    metrics, its request-log line and span; ApiError -> its gRPC status and message, anything else -> INTERNAL.
    An error's details end with the request id, so the id a client saw finds the line in one grep."""
    route = f"/{pb.SERVICE}/{method}"
    answer = getattr(service, method)

    async def call(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        traced = _server_span(method, context)
        rid = call_id(context, traced.trace_id if traced is not None else None)  # sent back with any answer
        code, message, response = grpc.StatusCode.OK, "", None
        try:
            request = parse(data)
            if service.on_loop(method, request):
                response = answer(request, context)
            else:
                response = await offload(answer, request, context)
            return response
        except ApiError as error:
            code, message = status_code(error.status), error.message
        except asyncio.CancelledError:  # the client went away (or its deadline passed): nothing to answer
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:  # never expected: tests prove bad input gets a clear status
            log.exception("unhandled error in %s (request id %s): %s", method, rid, error)
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_ERROR
        finally:
            metrics.observe_request("grpc", "POST", route, code.name, started)  # every gRPC call is an HTTP/2 POST
            fields = write_line(rid, route, code, started, len(data),
                                response.ByteSize() if response is not None else 0, context, **_answer_notes(response))
            if traced is not None:
                traced.detach()
                traced.end({"rpc.grpc.status_code": code.value[0]}, fields, error=code in SERVER_ERRORS)
        await context.abort(code, f"{message} (request id {rid})")  # raises: grpcio answers the status

    return call


def service_handler(service: InferenceService, offload: Offload) -> grpc.GenericRpcHandler:
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(_guarded(name, service, _parser(request_type), offload),
                                                  response_serializer=response_type.SerializeToString)
        for name, (request_type, response_type) in pb.METHODS.items()
    }
    return grpc.method_handlers_generic_handler(pb.SERVICE, handlers)


def part_helpers() -> int:
    """Helper threads for the parts of a big batch: one per CPU beyond the calling thread's."""
    return cpus() - 1


class GrpcServer:
    """The gRPC server with its model manager, health and reflection. `await start()` on the event loop that
    will serve it, then `await stop(grace)` to drain."""

    def __init__(self, config: Config, loader: Loader = load_model, address: str | None = None,
                 reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.address = address or f"{config.bind_host}:{config.grpc_port}"
        # A big batch runs in parts on the process's other CPUs too (server/parallel_model.py).
        self.manager = ModelManager(config, parallel_loader(loader, Helpers(part_helpers())))
        self.plane = DataPlane(self.manager, config.max_batch_size,
                               batching.from_config(config, metrics.observe_batch))
        self.service = InferenceService(config, self.manager, self.plane)
        self.threads = futures.ThreadPoolExecutor(max_workers=config.grpc_threads, thread_name_prefix="grpc")
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self._watcher: asyncio.Task[None] | None = None

    async def offload(self, call: Callable[..., T], *args: Any) -> T:
        """`call(*args)` on one of GRPC_THREADS threads, with this call's contextvars (its span)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.threads,
                                                                functools.partial(context.run, call, *args))

    async def start(self, watch: bool = True) -> None:
        server = grpc.aio.server(
            interceptors=(OtherServicesLog(pb.SERVICE),),  # health and reflection calls get their lines
            options=[("grpc.max_receive_message_length", self.config.max_body_bytes),
                     # Shared only by the processes of one server (server/transports/grpc_processes.py):
                     # otherwise a second server on the same port must fail, not share it.
                     ("grpc.so_reuseport", int(self.reuse_port))])
        server.add_generic_rpc_handlers((service_handler(self.service, self.offload),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        for described in (health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):  # reflection describes from one pool
            _add_to_pool(described)
        reflection.enable_server_reflection(  # an aio server gets the asyncio servicer
            (pb.SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server, pool=pb.POOL)
        self.port = server.add_insecure_port(self.address)
        self.server = server
        if watch:  # the first load (seconds) on a thread: the loop stays free
            await asyncio.to_thread(self.manager.start, load_first=self.config.backend == "onnx")
        await self._set_health()
        await server.start()
        self._watcher = asyncio.create_task(self._watch_health())

    async def stop(self, grace: float) -> None:
        """NOT_SERVING for the balancer, refuse new calls, let calls in flight finish for up to `grace` s."""
        if self._watcher is not None:
            self._watcher.cancel()
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
        self.manager.stop()
        if self.plane.batcher is not None:
            await asyncio.to_thread(self.plane.batcher.close)
        self.threads.shutdown(wait=False)

    async def _set_health(self) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if self.manager.current is not None
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", pb.SERVICE):  # "": the whole server, what grpc_health_probe asks by default
            await self.health.set(name, status)

    async def _watch_health(self) -> None:
        # The manager swaps models in its own thread; the health service follows it.
        while True:
            await asyncio.sleep(HEALTH_POLL_SECONDS)
            await self._set_health()


def _add_to_pool(file_descriptor: Any) -> None:
    try:
        pb.POOL.FindFileByName(file_descriptor.name)
    except KeyError:
        pb.POOL.AddSerializedFile(file_descriptor.serialized_pb)


async def serve(config: Config, reuse_port: bool = False, expose_metrics: bool = True) -> None:
    """Serve until SIGTERM or SIGINT, then drain for up to REQUEST_TIMEOUT seconds. `reuse_port` and no
    `expose_metrics`: one of several processes on one port, whose supervisor answers /metrics for all."""
    server = GrpcServer(config, reuse_port=reuse_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    if expose_metrics:  # its own exposition: this process is not one of gunicorn's workers
        prometheus_client.start_http_server(config.grpc_metrics_port, addr=config.bind_host)
        log.info("gRPC GRPCInferenceService, health and reflection on port %d, /metrics on %d", server.port,
                 config.grpc_metrics_port)
    await stop.wait()
    log.info("draining: up to %d s for calls in flight", config.request_timeout)
    await server.stop(config.request_timeout)


def main() -> None:
    try:
        config = Config.from_env()
    except ConfigError as error:
        sys.exit(f"grpc server: {error}")
    logs.configure(config.log_format)  # LOG_FORMAT: the request lines look as gunicorn's workers write them
    # Before loading anything: a clear message, not grpcio's "Failed to bind" traceback (one process) or a
    # silently shared port (several, on SO_REUSEPORT).
    grpc_processes.check_port_free(config.bind_host, config.grpc_port)
    if config.grpc_processes > 1:
        sys.exit(grpc_processes.supervise(config))
    tracing.setup(SERVICE_NAME)  # only with OTEL_EXPORTER_OTLP_*ENDPOINT; before the server builds its handlers
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
