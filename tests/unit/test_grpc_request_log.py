"""The gRPC process's request log and version lookups, in process over the real grpcio server and StandInModel.

Every call of inference.GRPCInferenceService gives exactly one `server.requests` line with the fields of the HTTP
line (server/request_log.py), its request id comes back as trailing metadata `x-request-id`, and an error's details
end with that id, so the id a client saw finds its line in one grep. The health service's Check and Watch, server
reflection and a method nothing serves get one line each too (server/transports/grpc_log.py).
ModelReady/ModelMetadata on a numbered version check the store and load nothing, as the HTTP routes do
(tests/unit/test_version_lookups.py).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import standin_digits, standin_loader
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import BackgroundLoop, eventually

from server.protocols import v2_grpc_messages as pb
from server.transports.grpc_server import GrpcServer
from shared import logs
from shared.config import Config

TOKEN = "s3cret"


@pytest.fixture
def grpc_server(standin_home: Path) -> Iterator[tuple[GrpcServer, list[str]]]:
    """Versions 1 to 5 in the store, 5 served, 4 fails to load; `loads` names each folder the loader was given."""
    loads: list[str] = []

    def loader(backend: str, folder: Path, threads: int) -> Any:
        loads.append(Path(folder).name)
        if Path(folder).name == "4":
            raise ValueError("version 4 is a broken model")
        return standin_loader(backend, folder, threads)

    for version in (3, 4, 5):
        folder = standin_home / "mnist" / str(version)
        folder.mkdir()
        (folder / "metadata.json").write_text(json.dumps({"version": version}))
    server = GrpcServer(Config(home=standin_home, max_batch_size=64, auth_token=TOKEN), loader=loader,
                        address="127.0.0.1:0")
    loop = BackgroundLoop()  # the asyncio server's loop; the test calls it from its own thread
    loop.run(server.start())
    yield server, loads
    loop.run(server.stop(grace=1))
    loop.close()


@pytest.fixture
def channel(grpc_server: tuple[GrpcServer, list[str]]) -> Iterator[grpc.Channel]:
    server, _loads = grpc_server
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        eventually(lambda: server.manager.current is not None, "the manager's first load", timeout=10)
        yield opened


def call(channel: grpc.Channel, method: str, request: Any, metadata: list[tuple[str, str]] | None = None,
         token: str | None = TOKEN) -> tuple[Any, Any]:
    """(response, call) of one call by its wire name; the call object holds the trailing metadata."""
    stub = channel.unary_unary(f"/{pb.SERVICE}/{method}", request_serializer=type(request).SerializeToString,
                               response_deserializer=pb.METHODS[method][1].FromString)
    sent = [*(metadata or []), *([("authorization", f"Bearer {token}")] if token else [])]
    return stub.with_call(request, timeout=10, metadata=sent)


def infer_request(*labels: int, **fields: Any) -> Any:
    images = standin_digits(*labels)
    request = pb.ModelInferRequest(model_name="mnist", **fields)
    request.inputs.add(name="pixels", datatype="UINT8", shape=images.shape)
    request.raw_input_contents.append(images.tobytes())
    return request


REQUESTS = {"ServerLive": pb.ServerLiveRequest(), "ServerReady": pb.ServerReadyRequest(),
            "ModelReady": pb.ModelReadyRequest(name="mnist"), "ServerMetadata": pb.ServerMetadataRequest(),
            "ModelMetadata": pb.ModelMetadataRequest(name="mnist"), "ModelInfer": infer_request(3, 7)}


def lines(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records
            if record.name == "server.requests" and record.fields["request_id"] == request_id]


def returned_id(rpc_call: Any) -> str:
    return dict(rpc_call.trailing_metadata())["x-request-id"]


def test_every_call_gives_one_line_with_its_id(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    assert set(REQUESTS) == set(pb.METHODS)  # a new method gets its line checked here
    for method, request in REQUESTS.items():
        request_id = f"grpc-{method}"
        response, rpc_call = call(channel, method, request, [("x-request-id", request_id)])
        assert returned_id(rpc_call) == request_id
        [line] = lines(caplog, request_id)
        fields = line.fields
        assert (fields["method"], fields["route"], fields["status"], fields["protocol"]) == (
            method, f"/inference.GRPCInferenceService/{method}", "OK", "grpc")
        assert fields["bytes_in"] == request.ByteSize() and fields["bytes_out"] == response.ByteSize()
        assert fields["latency_ms"] >= 0 and fields["client"].startswith(("ipv4:", "ipv6:"))
        if method == "ModelInfer":
            assert (fields["model_version"], fields["images"]) == (5, 2)
        else:
            assert fields["model_version"] is None and fields["images"] is None


def test_an_errors_id_finds_its_line(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    for method, request, token, code in (
            ("ModelInfer", infer_request(1), "wrong", grpc.StatusCode.UNAUTHENTICATED),
            ("ModelInfer", infer_request(1, model_version="9"), TOKEN, grpc.StatusCode.NOT_FOUND),
            ("ModelMetadata", pb.ModelMetadataRequest(name="fashion"), TOKEN, grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as raised:
            call(channel, method, request, token=token)
        error = raised.value
        assert error.code() == code
        found = re.search(r"\(request id ([0-9a-f]{32})\)$", error.details())
        assert found is not None, error.details()
        assert returned_id(error) == found[1]
        [line] = lines(caplog, found[1])
        assert (line.fields["method"], line.fields["status"]) == (method, code.name)


def test_the_id_is_kept_validated_or_taken_from_traceparent(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    _response, traced = call(channel, "ServerLive", pb.ServerLiveRequest(),
                             [("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")])
    assert returned_id(traced) == trace_id and len(lines(caplog, trace_id)) == 1
    _response, unsafe = call(channel, "ServerLive", pb.ServerLiveRequest(), [("x-request-id", "a b" * 100)])
    assert re.fullmatch(r"[0-9a-f]{32}", returned_id(unsafe))  # an unsafe id is replaced, as over HTTP
    assert len(lines(caplog, returned_id(unsafe))) == 1


def test_the_line_renders_in_both_log_formats(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    call(channel, "ModelInfer", infer_request(4), [("x-request-id", "fmt-1")])
    [record] = lines(caplog, "fmt-1")
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["message"].startswith("ModelInfer /inference.GRPCInferenceService/ModelInfer OK ")
    assert (line["request_id"], line["status"], line["images"], line["protocol"]) == ("fmt-1", "OK", 1, "grpc")
    assert "request_id=fmt-1 " in logs.TextFormatter().format(record)


def test_version_metadata_and_ready_load_nothing(grpc_server, channel) -> None:
    _server, loads = grpc_server
    before = list(loads)
    for version in ("1", "2", "3", "4"):
        assert call(channel, "ModelReady", pb.ModelReadyRequest(name="mnist", version=version))[0].ready
        metadata, _ = call(channel, "ModelMetadata", pb.ModelMetadataRequest(name="mnist", version=version))
        assert metadata.versions == ["1", "2", "3", "4", "5"]
    assert loads == before, f"metadata/ready calls loaded versions {loads[len(before):]}"
    for method, request in (("ModelReady", pb.ModelReadyRequest(name="mnist", version="9")),
                            ("ModelMetadata", pb.ModelMetadataRequest(name="mnist", version="9"))):
        with pytest.raises(grpc.RpcError) as raised:
            call(channel, method, request)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND and "version 9 not found" in raised.value.details()
    call(channel, "ModelInfer", infer_request(2, model_version="3"))
    assert loads[len(before):] == ["3"]  # inference on a version is what loads it


def test_a_version_that_failed_to_load_is_not_ready(channel) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, "ModelInfer", infer_request(2, model_version="4"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert not call(channel, "ModelReady", pb.ModelReadyRequest(name="mnist", version="4"))[0].ready
    assert call(channel, "ModelReady", pb.ModelReadyRequest(name="mnist", version="3"))[0].ready


def one_line(caplog: pytest.LogCaptureFixture, request_id: str) -> dict[str, Any]:
    """The fields of the one line with this id: other services' lines are written when grpcio ends the call."""
    eventually(lambda: lines(caplog, request_id), f"the line of {request_id}", timeout=10)
    [line] = lines(caplog, request_id)
    return line.fields


def test_health_and_reflection_calls_give_one_line_each(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    health = health_pb2_grpc.HealthStub(channel)
    answer, rpc_call = health.Check.with_call(health_pb2.HealthCheckRequest(), metadata=[("x-request-id", "hc-1")])
    assert returned_id(rpc_call) == "hc-1"
    fields = one_line(caplog, "hc-1")
    assert (fields["method"], fields["route"], fields["status"], fields["protocol"]) == (
        "Check", "/grpc.health.v1.Health/Check", "OK", "grpc")
    assert fields["bytes_out"] == answer.ByteSize() > 0 and fields["client"].startswith(("ipv4:", "ipv6:"))

    with pytest.raises(grpc.RpcError) as raised:  # the health service's own NOT_FOUND, its code logged
        health.Check(health_pb2.HealthCheckRequest(service="nope"), metadata=[("x-request-id", "hc-2")])
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and returned_id(raised.value) == "hc-2"
    assert one_line(caplog, "hc-2")["status"] == "NOT_FOUND"

    watch = health.Watch(health_pb2.HealthCheckRequest(), metadata=[("x-request-id", "watch-1")])
    assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    assert not lines(caplog, "watch-1")  # a stream's line is written when it ends, once
    watch.cancel()
    fields = one_line(caplog, "watch-1")
    assert (fields["route"], fields["status"]) == ("/grpc.health.v1.Health/Watch", "CANCELLED")
    assert fields["bytes_out"] > 0 and fields["latency_ms"] > 0

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=pb.SERVICE)]
    answers = list(reflection.ServerReflectionInfo(iter(asks), metadata=[("x-request-id", "refl-1")]))
    assert pb.SERVICE in {service.name for service in answers[0].list_services_response.service}
    fields = one_line(caplog, "refl-1")
    assert (fields["method"], fields["status"]) == ("ServerReflectionInfo", "OK")
    assert fields["bytes_in"] == sum(ask.ByteSize() for ask in asks)
    assert fields["bytes_out"] == sum(answer.ByteSize() for answer in answers)


def test_a_method_nothing_serves_gives_its_line(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    stub = channel.unary_unary("/no.Such/Method")
    with pytest.raises(grpc.RpcError) as raised:
        stub(b"abc", metadata=[("x-request-id", "nothing-1")])
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED and returned_id(raised.value) == "nothing-1"
    fields = one_line(caplog, "nothing-1")
    assert (fields["route"], fields["status"], fields["bytes_in"]) == ("unmatched", "UNIMPLEMENTED", 3)


def test_a_malformed_message_is_invalid_argument_with_its_line(channel, caplog) -> None:
    caplog.set_level(logging.INFO, logger="server.requests")
    stub = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer")  # raw bytes: no serializer
    with pytest.raises(grpc.RpcError) as raised:
        stub(b"\xff\xff\xff", metadata=[("x-request-id", "garbled-1"), ("authorization", f"Bearer {TOKEN}")])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert "not a valid inference.ModelInferRequest message" in raised.value.details()
    [line] = lines(caplog, "garbled-1")
    assert (line.fields["status"], line.fields["bytes_in"]) == ("INVALID_ARGUMENT", 3)
