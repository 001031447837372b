"""OpenTelemetry tracing through a real gunicorn: with OTEL_EXPORTER_OTLP_ENDPOINT set, one v2 infer sent with a
W3C traceparent reaches a real OTLP/HTTP receiver (an http.server started here, decoding the protobuf export
with opentelemetry-proto) as a server span continuing the caller's trace, with child spans for the body read,
decode, model run and encode carrying the model version and batch size; the request id is the trace id. A gRPC
ModelInfer to the real gRPC process, its traceparent in the call's metadata, reaches it the same way."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from conftest import free_port
from grpc_process import GrpcProcess
from helpers import eventually
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from server.protocols import v2_grpc_messages as pb

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class OtlpReceiver:
    """POST /v1/traces: ExportTraceServiceRequest bodies, decoded; every span kept."""

    def __init__(self) -> None:
        self.spans: list = []
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.paths.append((self.path, self.headers["Content-Type"]))
                export = ExportTraceServiceRequest.FromString(body)
                for resource in export.resource_spans:
                    for scope in resource.scope_spans:
                        outer.spans.extend((resource.resource, span) for span in scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def _attributes(span) -> dict:
    return {item.key: getattr(item.value, item.value.WhichOneof("value")) for item in span.attributes}


def test_a_v2_infer_reaches_the_otlp_receiver_with_its_spans(trained_home: Path, start_server,
                                                             receiver: OtlpReceiver) -> None:
    live = start_server(trained_home, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
                        OTEL_SERVICE_NAME="mnist-test", WEB_CONCURRENCY="1")
    body = {"inputs": [{"name": "images", "shape": [3, 28, 28], "datatype": "FP32",
                        "data": np.zeros(3 * 784).tolist()}]}
    response = requests.post(live.url + "/v2/models/mnist/infer", json=body, timeout=30,
                             headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == TRACE

    names = {"read body", "decode", "model run", "encode", "POST /v2/models/mnist/infer"}
    eventually(lambda: names <= {span.name for _resource, span in receiver.spans}, "the spans at the receiver")
    assert {path for path, _type in receiver.paths} == {"/v1/traces"}
    assert {kind for _path, kind in receiver.paths} == {"application/x-protobuf"}
    spans = {span.name: (resource, span) for resource, span in receiver.spans}
    resource, server = spans["POST /v2/models/mnist/infer"]
    assert _attributes(resource)["service.name"] == "mnist-test"
    assert server.trace_id.hex() == TRACE and server.parent_span_id.hex() == PARENT  # traceparent continued
    assert _attributes(server)["http.route"] == "/v2/models/mnist/infer"
    assert _attributes(server)["http.response.status_code"] == 200
    for name in names - {server.name}:
        child = spans[name][1]
        assert child.trace_id.hex() == TRACE and child.parent_span_id == server.span_id, name
        assert server.start_time_unix_nano <= child.start_time_unix_nano <= child.end_time_unix_nano
    assert _attributes(spans["model run"][1]) == {"model_version": 1, "batch_size": 3}
    assert _attributes(spans["decode"][1]) == {"protocol": "v2"}
    assert _attributes(server)["mnist.model_version"] == 1 and _attributes(server)["mnist.images"] == 3


def test_a_grpc_model_infer_reaches_the_otlp_receiver_with_its_spans(trained_home: Path, tmp_path: Path,
                                                                     receiver: OtlpReceiver) -> None:
    process = GrpcProcess(trained_home, tmp_path / "grpc.log", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
                          OTEL_BSP_SCHEDULE_DELAY="100")
    try:
        process.wait_serving()
        request = pb.ModelInferRequest(model_name="mnist")
        request.inputs.add(name="images", datatype="UINT8", shape=[2, 28, 28])
        request.raw_input_contents.append(bytes(2 * 784))
        with grpc.insecure_channel(process.address) as channel:
            infer = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer",
                                        request_serializer=pb.ModelInferRequest.SerializeToString,
                                        response_deserializer=pb.ModelInferResponse.FromString)
            _answer, call = infer.with_call(request, timeout=30, metadata=[("traceparent", f"00-{TRACE}-{PARENT}-01")])
        assert dict(call.trailing_metadata())["x-request-id"] == TRACE

        server_name = f"{pb.SERVICE}/ModelInfer"
        names = {"read message", "decode", "model run", "encode", server_name}
        eventually(lambda: names <= {span.name for _resource, span in receiver.spans}, "the gRPC spans at the receiver",
                   detail=process.log)
    finally:
        process.stop()
    spans = {span.name: (resource, span) for resource, span in receiver.spans}
    resource, server = spans[server_name]
    assert _attributes(resource)["service.name"] == "mnist-grpc"
    assert server.trace_id.hex() == TRACE and server.parent_span_id.hex() == PARENT  # metadata traceparent continued
    assert {key: _attributes(server)[key] for key in ("rpc.system", "rpc.method", "rpc.grpc.status_code",
                                                      "mnist.model_version", "mnist.images", "mnist.request_id")} == {
        "rpc.system": "grpc", "rpc.method": "ModelInfer", "rpc.grpc.status_code": 0, "mnist.model_version": 1,
        "mnist.images": 2, "mnist.request_id": TRACE}
    for name in names - {server_name}:
        child = spans[name][1]
        assert child.trace_id.hex() == TRACE and child.parent_span_id == server.span_id, name
        assert server.start_time_unix_nano <= child.start_time_unix_nano <= child.end_time_unix_nano
        assert child.end_time_unix_nano <= server.end_time_unix_nano, name
    read, decode = spans["read message"][1], spans["decode"][1]
    assert read.end_time_unix_nano <= decode.start_time_unix_nano  # grpcio parsed the message before the call
    assert _attributes(read) == {"bytes": request.ByteSize()}
    assert _attributes(spans["model run"][1]) == {"model_version": 1, "batch_size": 2}
    assert _attributes(decode) == {"protocol": "grpc"}


def test_tracing_is_off_without_an_endpoint(monkeypatch) -> None:
    from server import tracing

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert not tracing.configured() and not tracing.setup() and not tracing.enabled()
    assert tracing.span("decode") is tracing.span("encode")  # one shared null context: nothing per request
    assert not tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"})
