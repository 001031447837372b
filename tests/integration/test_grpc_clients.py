"""tritonclient.grpc, kserve's InferenceGRPCClient and a grpc.health.v1 check against the real gRPC process.

The server runs as it does in the image (`python -m server.transports.grpc_server`, trained model, AUTH_TOKEN
set); each client runs unmodified in its own process (tests/integration/grpc_clients.py says why).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from conftest import ROOT
from grpc_process import GrpcProcess
from helpers import MIN_ACCURACY, eventually, first_test_digits, publish_copy, run_client

from server.protocols import v2_grpc_messages as pb

COUNT = 64
TOKEN = "grpc-token"


@pytest.fixture(scope="module")
def server(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcProcess]:
    process = GrpcProcess(trained_home, tmp_path_factory.mktemp("grpc") / "grpc.log", AUTH_TOKEN=TOKEN)
    try:
        process.wait_serving()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def digits(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    images, labels = first_test_digits(trained_home / "datasets" / "mnist.npz", COUNT)
    path = tmp_path_factory.mktemp("digits") / "digits.npy"
    np.save(path, images)
    return path, images, labels


def test_tritonclient_grpc(server, digits) -> None:
    path, _images, labels = digits
    said = run_client("triton", server.address, path, TOKEN)
    assert said["live_ready"] == [True, True, True, True]
    assert "binary_tensor_data" in said["extensions"]
    assert said["metadata"]["versions"] == ["1"] and said["metadata"]["inputs"][0]["name"] == "pixels"
    for case in ("raw served", "raw 1"):  # the client's defaults, on the served and a numbered version
        answer = said[case]
        assert (answer["id"], answer["version"], answer["raw"]) == ("t-1", "1", 2)
        assert answer["labels"] == answer["argmax"]
        assert (np.array(answer["labels"]) == labels).mean() > MIN_ACCURACY
    assert said["typed"]["raw"] == 2 and said["typed"]["labels"] == said["raw served"]["labels"]
    assert said["typed"]["id"] == "t-2"
    assert (np.array(said["png"]) == labels[:16]).mean() > MIN_ACCURACY - 0.1
    assert said["unknown version"][0] == "StatusCode.NOT_FOUND" and "version 7 not found" in said["unknown version"][1]
    assert said["no token"][0] == "StatusCode.UNAUTHENTICATED" and "bearer token" in said["no token"][1]


def test_kserve_inference_grpc_client(server, digits) -> None:
    path, _images, labels = digits
    said = run_client("kserve", server.address, path, TOKEN)
    assert said["live_ready"] == [True, True, True]
    assert said["raw"]["labels"] == said["typed"]["labels"]
    for form in ("raw", "typed"):
        assert said[form]["id"] == "k-1" and said[form]["shape"] == [COUNT, 10]
        assert (np.array(said[form]["labels"]) == labels).mean() > MIN_ACCURACY


def test_metrics_count_calls_per_method_and_status(server, digits) -> None:
    run_client("kserve", server.address, digits[0], TOKEN)
    text = requests.get(f"http://127.0.0.1:{server.env['GRPC_METRICS_PORT']}/metrics", timeout=10).text
    # The HTTP routes' families with protocol "grpc", the route the method's path, status the gRPC code's name.
    assert ('mnist_requests_total{method="POST",protocol="grpc",route="/inference.GRPCInferenceService/ModelInfer",'
            'status="OK"}') in text
    assert ('mnist_request_duration_seconds_count{protocol="grpc",'
            'route="/inference.GRPCInferenceService/ServerLive"}') in text
    assert "mnist_inference_batch_size_count" in text


def test_health_service_says_serving(server, digits) -> None:
    said = run_client("health", server.address, digits[0], TOKEN)
    assert said == {"server": "SERVING", "inference.GRPCInferenceService": "SERVING"}


def test_the_image_probe_says_serving(server) -> None:
    probe = [sys.executable, "-m", "server.transports.grpc_probe", server.address]
    done = subprocess.run(probe, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "SERVING"), done.stderr
    done = subprocess.run([*probe[:-1], "127.0.0.1:1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (1, "UNAVAILABLE")


def test_sigterm_drains_and_exits_cleanly(trained_home: Path, tmp_path: Path) -> None:
    process = GrpcProcess(trained_home, tmp_path / "grpc.log")
    process.wait_serving()
    process.process.send_signal(signal.SIGTERM)
    assert process.process.wait(30) == 0, process.log()
    assert "draining" in process.log()
    process.stop()


def test_a_published_version_is_served_without_a_failed_call(home_copy: Path, tmp_path: Path) -> None:
    """Hot reload: the process's own model manager picks up a new version; calls meanwhile all succeed."""
    process = GrpcProcess(home_copy, tmp_path / "grpc.log")
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="pixels", datatype="UINT8", shape=[1, 784])
    request.raw_input_contents.append(bytes(784))
    try:
        process.wait_serving()
        with grpc.insecure_channel(process.address) as channel:
            infer = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer",
                                        request_serializer=pb.ModelInferRequest.SerializeToString,
                                        response_deserializer=pb.ModelInferResponse.FromString)
            assert infer(request, timeout=10).model_version == "1"
            assert publish_copy(home_copy) == 2
            versions: list[str] = []

            def serves_version_2() -> bool:
                versions.append(infer(request, timeout=10).model_version)  # an error status would raise
                return versions[-1] == "2"

            eventually(serves_version_2, "version 2 from ModelInfer", timeout=60, interval=0.05,
                       detail=lambda: f"last versions: {versions[-5:]}")
    finally:
        process.stop()
