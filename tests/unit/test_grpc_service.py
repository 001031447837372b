"""inference.GRPCInferenceService in process: the real grpc.aio server, codec and data plane over StandInModel.

The server runs on its own event loop's thread (helpers.BackgroundLoop). A real channel on loopback calls
each method by its wire name with the checked-in messages, so every answer went through grpcio's
serialization. The field's clients (tritonclient.grpc, kserve) against the real process are in
tests/integration/test_grpc_clients.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import StandInModel, standin_digit, standin_loader
from conftest import standin_digits as digits
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import BackgroundLoop, eventually

from server.protocols import v2_grpc_messages as pb
from server.transports.grpc_server import INLINE_IMAGES, GrpcServer
from shared.config import Config
from shared.preprocess import mnist_to_png

TOKEN = "s3cret"
MAX_BODY = 64 * 1024


@pytest.fixture
def loop() -> Iterator[BackgroundLoop]:
    running = BackgroundLoop()  # the asyncio server's loop; the test calls it from its own thread
    yield running
    running.close()


@pytest.fixture
def server(standin_home: Path, loop: BackgroundLoop) -> Iterator[GrpcServer]:
    config = Config(home=standin_home, max_batch_size=64, max_body_bytes=MAX_BODY, auth_token=TOKEN)
    grpc_server = GrpcServer(config, loader=standin_loader, address="127.0.0.1:0")
    loop.run(grpc_server.start())
    yield grpc_server
    loop.run(grpc_server.stop(grace=1))


@pytest.fixture
def channel(server: GrpcServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        grpc.channel_ready_future(opened).result(timeout=10)
        health = health_pb2_grpc.HealthStub(opened)
        for _ in range(100):  # the health service follows the manager's first load
            if health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING:
                break
            time.sleep(0.1)
        yield opened


def call(channel: grpc.Channel, method: str, request: Any, token: str | None = TOKEN, timeout: float = 10) -> Any:
    response_type = pb.METHODS[method][1]
    stub = channel.unary_unary(f"/{pb.SERVICE}/{method}", request_serializer=type(request).SerializeToString,
                               response_deserializer=response_type.FromString)
    return stub(request, timeout=timeout, metadata=[("authorization", f"Bearer {token}")] if token else None)


def expect_error(channel: grpc.Channel, request: Any, code: grpc.StatusCode, *fragments: str,
                 method: str = "ModelInfer", token: str | None = TOKEN) -> str:
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, method, request, token)
    error = raised.value
    assert error.code() == code, (error.code(), error.details())
    for fragment in fragments:
        assert fragment.lower() in error.details().lower(), (fragment, error.details())
    return error.details()


def raw_request(images: np.ndarray, datatype: str = "UINT8", dtype: str = "u1", **fields: Any) -> Any:
    request = pb.ModelInferRequest(**{"model_name": "mnist", **fields})
    request.inputs.add(name="pixels", datatype=datatype, shape=images.shape)
    request.raw_input_contents.append(np.ascontiguousarray(images, dtype=dtype).tobytes())
    return request


def labels_of(response: Any) -> list[int]:
    names = [output.name for output in response.outputs]
    at = names.index("label")
    if response.raw_output_contents:
        return np.frombuffer(response.raw_output_contents[at], "<i8").tolist()
    return list(response.outputs[at].contents.int64_contents)


def test_health_metadata_and_readiness(channel) -> None:
    assert call(channel, "ServerLive", pb.ServerLiveRequest()).live
    assert call(channel, "ServerReady", pb.ServerReadyRequest()).ready
    assert call(channel, "ModelReady", pb.ModelReadyRequest(name="mnist")).ready
    assert call(channel, "ModelReady", pb.ModelReadyRequest(name="mnist", version="1")).ready
    metadata = call(channel, "ModelMetadata", pb.ModelMetadataRequest(name="mnist"))
    assert metadata.versions == ["1", "2"] and metadata.inputs[0].name == "pixels"
    assert [output.name for output in metadata.outputs] == ["probabilities", "label"]
    assert "binary_tensor_data" in call(channel, "ServerMetadata", pb.ServerMetadataRequest()).extensions
    expect_error(channel, pb.ModelReadyRequest(name="mnist", version="9"), grpc.StatusCode.NOT_FOUND,
                 "model version 9 not found", method="ModelReady")
    expect_error(channel, pb.ModelMetadataRequest(name="fashion"), grpc.StatusCode.NOT_FOUND,
                 "unknown model 'fashion'", method="ModelMetadata")


def test_raw_in_raw_out_on_the_served_and_a_numbered_version(channel) -> None:
    response = call(channel, "ModelInfer", raw_request(digits(3, 7), id="req-1"))
    assert (response.model_version, response.id, labels_of(response)) == ("2", "req-1", [3, 7])
    probabilities = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(list(response.outputs[0].shape))
    assert probabilities.shape == (2, 10) and probabilities[0, 3] == pytest.approx(0.91)
    assert call(channel, "ModelInfer", raw_request(digits(5), model_version="1")).model_version == "1"


@pytest.mark.parametrize(("datatype", "field"), [("UINT8", "uint_contents"), ("INT32", "int_contents"),
                                                 ("INT64", "int64_contents"), ("FP32", "fp32_contents"),
                                                 ("FP64", "fp64_contents")])
def test_typed_contents_in_raw_out(channel, datatype, field) -> None:
    request = pb.ModelInferRequest(model_name="mnist", outputs=[{"name": "label"}])
    tensor = request.inputs.add(name="pixels", datatype=datatype, shape=[2, 784])
    getattr(tensor.contents, field).extend(digits(4, 8).ravel().tolist())
    response = call(channel, "ModelInfer", request)
    assert len(response.raw_output_contents) == 1 and [o.name for o in response.outputs] == ["label"]
    assert labels_of(response) == [4, 8]


def test_bytes_png_images_raw_and_typed(channel) -> None:
    pngs = [mnist_to_png(standin_digit(label).astype(np.uint8)) for label in (2, 6)]
    typed = pb.ModelInferRequest(model_name="mnist")
    typed.inputs.add(name="pixels", datatype="BYTES", shape=[2], contents={"bytes_contents": pngs})
    raw = pb.ModelInferRequest(model_name="mnist")
    raw.inputs.add(name="pixels", datatype="BYTES", shape=[2, 1])
    raw.raw_input_contents.append(b"".join(len(png).to_bytes(4, "little") + png for png in pngs))
    raw_labels = labels_of(call(channel, "ModelInfer", raw))
    assert labels_of(call(channel, "ModelInfer", typed)) == raw_labels and len(raw_labels) == 2


def test_parameters_choose_the_output_form(channel) -> None:
    request = raw_request(digits(1))
    request.parameters["binary_data_output"].bool_param = False
    response = call(channel, "ModelInfer", request)
    assert not response.raw_output_contents and labels_of(response) == [1]
    request.parameters["binary_data_output"].string_param = "yes"
    expect_error(channel, request, grpc.StatusCode.INVALID_ARGUMENT, "binary_data_output must be true or false")


def _fp16_typed() -> Any:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="pixels", datatype="FP16", shape=[1, 784], contents={"fp32_contents": [0] * 784})
    return request


def _both_forms() -> Any:
    request = raw_request(digits(1))
    request.inputs[0].contents.uint_contents.extend([0] * 784)
    return request


def _short_typed() -> Any:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="pixels", datatype="UINT8", shape=[1, 784], contents={"uint_contents": [0] * 700})
    return request


def _out_of_range() -> Any:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="pixels", datatype="UINT16", shape=[1, 784], contents={"uint_contents": [300] * 784})
    return request


def _cut_bytes() -> Any:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="pixels", datatype="BYTES", shape=[1])
    request.raw_input_contents.append((1000).to_bytes(4, "little") + b"\x89PNG")
    return request


def _not_an_image() -> Any:
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="pixels", datatype="BYTES", shape=[1], contents={"bytes_contents": [b"not a png"]})
    return request


def _extra_raw() -> Any:
    request = raw_request(digits(1))
    request.raw_input_contents.append(b"\x00")
    return request


MALFORMED = {
    "raw size": (lambda: raw_request(digits(1), datatype="FP32", dtype="u1"), "holds 784 bytes but shape"),
    "shape": (lambda: raw_request(np.zeros((1, 27, 27), np.uint8)), "expected n images of 28x28"),
    "datatype": (lambda: raw_request(digits(1), datatype="BF16"), "datatype must be one of"),
    "negative shape": (lambda: _set_shape(raw_request(digits(1)), [-1, 784]), "shape must be a list of non-negative"),
    "fp16 typed": (_fp16_typed, "fp16 has no typed contents"),
    "contents and raw": (_both_forms, "has both contents and raw_input_contents"),
    "typed count": (_short_typed, "needs 784 values, contents.uint_contents holds 700"),
    "pixel range": (_out_of_range, "between 0 and 255"),
    "bytes cut off": (_cut_bytes, "says 1000 bytes"),
    "not an image": (_not_an_image, "element 0"),
    "raw entries": (_extra_raw, "raw_input_contents has 2 entries for 1 inputs"),
    "no inputs": (lambda: pb.ModelInferRequest(model_name="mnist"), "non-empty list of tensors"),
    "unknown output": (lambda: raw_request(digits(1), outputs=[{"name": "logits"}]), "unknown outputs ['logits']"),
    "batch limit": (lambda: raw_request(np.zeros((65, 784), np.uint8)), "65 images in one request; at most 64"),
    "version text": (lambda: raw_request(digits(1), model_version="latest"), "must be a version number"),
}


def _set_shape(request: Any, shape: list[int]) -> Any:
    del request.inputs[0].shape[:]
    request.inputs[0].shape.extend(shape)
    return request


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_requests_get_invalid_argument_with_the_reason(channel, case) -> None:
    build, fragment = MALFORMED[case]
    expect_error(channel, build(), grpc.StatusCode.INVALID_ARGUMENT, fragment)
    assert call(channel, "ServerLive", pb.ServerLiveRequest()).live  # and the server carries on


def test_not_found_unauthenticated_and_oversize(channel) -> None:
    expect_error(channel, raw_request(digits(1), model_name="other"), grpc.StatusCode.NOT_FOUND, "unknown model")
    expect_error(channel, raw_request(digits(1), model_version="9"), grpc.StatusCode.NOT_FOUND, "version 9 not found")
    expect_error(channel, raw_request(digits(1)), grpc.StatusCode.UNAUTHENTICATED, "bearer token", token=None)
    expect_error(channel, raw_request(digits(1)), grpc.StatusCode.UNAUTHENTICATED, "bearer token", token="wrong")
    big = raw_request(np.zeros((40, 784), np.float64), datatype="FP64", dtype="<f8")  # 250 KB > MAX_BODY
    expect_error(channel, big, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max")
    assert call(channel, "ModelInfer", raw_request(digits(1))).outputs  # the server carries on


def test_health_service_and_reflection(server, loop, channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", pb.SERVICE):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    asked = [reflection_pb2.ServerReflectionRequest(list_services=""),
             reflection_pb2.ServerReflectionRequest(file_containing_symbol=f"{pb.SERVICE}")]
    listed, described = reflection.ServerReflectionInfo(iter(asked))
    names = {service.name for service in listed.list_services_response.service}
    assert {pb.SERVICE, "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can describe the calls
    loop.run(server.stop(grace=1))
    with pytest.raises(grpc.RpcError):
        health.Check(health_pb2.HealthCheckRequest(), timeout=2)


class ThreadRecordingModel(StandInModel):
    """The stand-in model, noting the images and the thread of each run."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, str]] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self.runs.append((len(batch), threading.current_thread().name))
        return super().predict(batch)


@pytest.mark.parametrize("batching", [False, True])
def test_only_small_calls_on_the_served_model_run_on_the_event_loop(standin_home, loop, batching) -> None:
    model = ThreadRecordingModel()
    config = Config(home=standin_home, max_batch_size=64, auth_token=TOKEN, batching=batching)
    grpc_server = GrpcServer(config, loader=lambda *_: model, address="127.0.0.1:0")
    loop.run(grpc_server.start())
    expected = {(1, ""): "test-loop", (INLINE_IMAGES, ""): "test-loop", (INLINE_IMAGES + 1, ""): "grpc",
                (1, "1"): "grpc"}  # a numbered version may need loading: never on the loop
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
            eventually(lambda: grpc_server.manager.current is not None, "the first load", timeout=10)
            for (count, version), thread in expected.items():
                model.runs.clear()
                response = call(channel, "ModelInfer", raw_request(digits(*[3] * count), model_version=version))
                assert labels_of(response) == [3] * count
                images, ran_on = model.runs[-1]  # a version's load may run the model first
                # With BATCHING the batcher's thread runs every batch; the call waits for it on a grpc thread.
                assert images == count and ran_on.startswith("batcher" if batching else thread), (count, ran_on)
    finally:
        loop.run(grpc_server.stop(grace=1))


class HeldModel(StandInModel):
    """The stand-in model, holding each run until `release` is set."""

    def __init__(self) -> None:
        self.hold, self.running, self.release = threading.Event(), threading.Event(), threading.Event()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        if self.hold.is_set():  # set once loaded: the warm-up passes
            self.running.set()
            assert self.release.wait(30)
        return super().predict(batch)


def test_stop_refuses_new_calls_and_lets_the_call_in_flight_finish(standin_home, loop) -> None:
    model = HeldModel()
    grpc_server = GrpcServer(Config(home=standin_home, auth_token=TOKEN), loader=lambda *_: model,
                             address="127.0.0.1:0")
    loop.run(grpc_server.start())
    labels = [5] * (INLINE_IMAGES + 1)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel, ThreadPoolExecutor(1) as client:
        eventually(lambda: grpc_server.manager.current is not None, "the first load", timeout=10)
        model.hold.set()
        in_flight = client.submit(call, channel, "ModelInfer", raw_request(digits(*labels)))
        assert model.running.wait(10)
        stopping = asyncio.run_coroutine_threadsafe(grpc_server.stop(grace=30), loop.loop)

        def refused() -> bool:
            # A call that reaches grpcio just as it shuts down may be CANCELLED, or wait until its deadline (a CI
            # run saw no refusal in 10 s with 10 s probes): a short deadline lets the next probe ask again.
            try:
                call(channel, "ServerLive", pb.ServerLiveRequest(), timeout=1)
            except grpc.RpcError as error:
                return error.code() == grpc.StatusCode.UNAVAILABLE
            return False

        eventually(refused, "new calls refused while draining", timeout=10)
        assert not stopping.done()  # the call in flight holds the drain
        model.release.set()
        assert labels_of(in_flight.result(timeout=10)) == labels
        stopping.result(timeout=10)
