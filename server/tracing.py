"""OpenTelemetry tracing, off unless an OTLP endpoint is configured with the standard settings
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, and the rest of the `OTEL_*`
variables the SDK reads: headers, timeout, service name, resource attributes, sampler, batch delays).

Spans are sent over OTLP/HTTP (protobuf) by the SDK's batch processor, from a thread of each worker.
Off, `span()` is a constant null context and nothing of the SDK is imported, so the request path pays one
flag check per span (measured by `python -m bench.run --only observability`). One request gives a server
span (the request log's middleware starts it, continuing an incoming W3C `traceparent`) with child spans for
the body read, decode, queue/batch or model run, and encode, carrying the model version and batch size. A
gRPC call (server/transports/grpc_server.py) gives the same, its `traceparent` read from the call's metadata
and its "read message" span the protobuf parse of the call's bytes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

SERVICE_NAME = "mnist-server"
_tracer: Any = None  # the SDK's tracer once setup() found an endpoint; None: tracing is off


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTEL_* settings ask for traces to be exported."""
    environ = os.environ if environ is None else environ
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup(service_name: str = SERVICE_NAME) -> bool:
    """Start exporting spans if configured (call once per process, after gunicorn's fork); returns whether on."""
    global _tracer
    if _tracer is not None or not configured():
        return _tracer is not None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, when set, names the service; otherwise this one does.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, headers, timeout: OTEL_*
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("server")
    return True


def enabled() -> bool:
    return _tracer is not None


@contextlib.contextmanager
def _span(name: str, attributes: Mapping[str, Any]) -> Iterator[Any]:
    with _tracer.start_as_current_span(name, attributes=dict(attributes)) as current:
        yield current


_OFF = contextlib.nullcontext()


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one while tracing is on; a shared null context when off."""
    if _tracer is None:
        return _OFF
    return _span(name, attributes)


class _EnvironGetter:
    """Reads propagation headers (`traceparent`, `tracestate`, `baggage`) from a WSGI environ."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get("HTTP_" + key.upper().replace("-", "_"))
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key[5:].lower().replace("_", "-") for key in carrier if key.startswith("HTTP_")]


class _MetadataGetter:
    """Reads the same keys from gRPC invocation metadata ((key, value) pairs, keys lower case)."""

    def get(self, carrier: Sequence[tuple[str, Any]], key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key and isinstance(value, str)]
        return values or None

    def keys(self, carrier: Sequence[tuple[str, Any]]) -> list[str]:
        return [name for name, _value in carrier]


ENVIRON = _EnvironGetter()
METADATA = _MetadataGetter()


class ServerSpan:
    """One request's span: started (continuing an incoming traceparent read by `getter` from `carrier`) and
    made current by the transport around the call, ended when the answer is done. The HTTP request log
    middleware and the gRPC service make one each; none of it runs while tracing is off."""

    def __init__(self, carrier: Any, name: str, attributes: Mapping[str, Any], getter: Any = ENVIRON) -> None:
        from opentelemetry import context, propagate, trace

        parent = propagate.extract(carrier, getter=getter)
        self.span = _tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER,
                                       attributes=dict(attributes))
        self._token = context.attach(trace.set_span_in_context(self.span, parent))
        self._context = context

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    def detach(self) -> None:
        self._context.detach(self._token)

    def end(self, attributes: Mapping[str, Any], fields: Mapping[str, Any], error: bool,
            name: str | None = None) -> None:
        """Set the answer's `attributes` and the request line's `fields` (as mnist.*), rename, end."""
        from opentelemetry.trace import Status, StatusCode

        if name is not None:
            self.span.update_name(name)
        self.span.set_attributes(dict(attributes))
        for key in ("request_id", "model_version", "images", "protocol"):
            if fields.get(key) is not None:
                self.span.set_attribute(f"mnist.{key}", fields[key])
        if error:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()
