"""Faults around the running server: bad models published as new versions, a worker
killed under load, and a graceful stop with requests in flight.

All against the real gunicorn master and workers on 127.0.0.1, over a model store the
real trainer wrote.
"""

from __future__ import annotations

import http.client
import select
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import psutil
import pytest
import requests
from helpers import eventually, every_worker, npy, predicted_version, publish_copy, served
from onnx import TensorProto, helper
from soak.load import Load

from shared.model_store import ONNX_FILE

ZERO = [[0] * 28] * 28
WORKERS = 2


def onnx_model(input_shape: list, output_classes: int, weight: float) -> bytes:
    """A loadable ONNX model: flatten the input, multiply by a constant matrix, softmax."""
    features = int(np.prod(input_shape[1:]))
    weights = helper.make_tensor("w", TensorProto.FLOAT, [features, output_classes],
                                 [weight] * (features * output_classes))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"])],
        "not_mnist",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", output_classes])],
        initializer=[weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


def failed(version: int) -> Callable[[dict], bool]:
    """A check for `every_worker`: /models lists `version` among the versions that failed to load."""
    return lambda status: version in [entry["version"] for entry in status["failed"]]


BAD_MODELS = {
    # A copy interrupted half way, e.g. by hand outside the trainer.
    "truncated": lambda good: good[: len(good) // 2],
    "wrong input shape": lambda good: onnx_model(["N", 5], 10, 0.1),
    "wrong number of classes": lambda good: onnx_model(["N", 28, 28, 1], 3, 0.1),
}


@pytest.fixture(scope="module")
def own_home(trained_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("bad-models") / "home"
    shutil.copytree(trained_home, home)
    return home


@pytest.fixture(scope="module")
def server(own_home: Path, start_module_server):
    return start_module_server(own_home, WEB_CONCURRENCY=str(WORKERS), THREADS="2")


def test_bad_models_are_refused_reported_and_the_last_good_one_keeps_serving(own_home, server) -> None:
    good = (own_home / "mnist" / "1" / ONNX_FILE).read_bytes()
    refused: list[int] = []
    for kind, make in BAD_MODELS.items():
        version = publish_copy(own_home, onnx=make(good))
        refused.append(version)
        eventually(lambda v=version: every_worker(server.url, failed(v), 3 * WORKERS),
                   f"refusal of the {kind} model (version {version}) in /models",
                   detail=lambda: f"/models says {requests.get(server.url + '/models', timeout=10).json()}")
        assert predicted_version(server.url) == 1, kind
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 200, kind
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    for version in refused:
        assert f'mnist_model_load_failures_total{{version="{version}"}}' in metrics, metrics
    # The failures do not wedge the reloader: the next good version is picked up as usual.
    fixed = publish_copy(own_home, onnx=good)
    eventually(lambda: every_worker(server.url, served(fixed), 3 * WORKERS), "the good version")
    assert predicted_version(server.url) == fixed


def test_a_model_answering_nan_is_refused(own_home, server) -> None:
    nan_model = onnx_model(["N", 28, 28, 1], 10, float("nan"))
    onnx.checker.check_model(nan_model)  # well-formed: loads, takes MNIST, answers ten numbers per image
    serving = predicted_version(server.url)
    version = publish_copy(own_home, onnx=nan_model)
    eventually(lambda: every_worker(server.url, failed(version), 3 * WORKERS),
               f"refusal of the NaN model (version {version}) in /models",
               detail=lambda: f"/predict answers version {predicted_version(server.url)}")
    assert predicted_version(server.url) == serving


def test_a_killed_worker_is_replaced_and_service_recovers_within_seconds(trained_home, start_server) -> None:
    server = start_server(trained_home, WEB_CONCURRENCY=str(WORKERS), THREADS="2")
    master = psutil.Process(server.process.pid)
    with Load(server.url, clients=4) as load:
        time.sleep(2)
        victim = master.children()[0]
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()

        def replaced() -> bool:
            pids = {p.pid for p in master.children()}
            return len(pids) == WORKERS and victim.pid not in pids

        eventually(replaced, "replacement worker", timeout=30)
        # Recovered: every request started from now on succeeds, for five seconds running.
        recovered_at = time.monotonic()
        recovery = recovered_at - killed_at
        while time.monotonic() - recovered_at < 5:
            time.sleep(0.5)
            late_failures = load.failures(since=recovered_at)
            if late_failures:
                recovered_at = max(r.started for r in late_failures)
                recovery = recovered_at - killed_at
                assert recovery < 20, f"still failing {recovery:.1f} s after the kill: {late_failures[:3]}"
    lost = load.failures(since=killed_at)
    print(f"\nworker SIGKILL under load: recovered in {recovery:.2f} s; {len(lost)} requests lost"
          f" (in flight on the killed worker) of {len(load.records)}")
    assert recovery < 20
    assert len(load.records) - len(load.failures()) > 50
    # Requests that ended well before the kill all succeeded (those in flight on the victim may not).
    assert not load.failures(until=killed_at - 1), "requests failed before the kill"


def test_sigterm_lets_requests_in_flight_finish(trained_home, start_server) -> None:
    server = start_server(trained_home, WEB_CONCURRENCY=str(WORKERS), THREADS="4")
    master = psutil.Process(server.process.pid)
    body = npy(np.random.default_rng(0).integers(0, 256, (1024, 28, 28), dtype=np.uint8))
    request = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body) + body)
    # Eight big batches: on two cores they take a while, so most are still being worked on
    # when the signal comes.
    clients = [socket.create_connection(("127.0.0.1", server.port), timeout=60) for _ in range(WORKERS * 4)]
    for sock in clients:
        sock.sendall(request)
    ports = {sock.getsockname()[1] for sock in clients}

    def accepted_by_workers() -> bool:
        # Each connection is held by a worker process: the request is in the server, not in a queue.
        held = {c.raddr.port for worker in master.children() for c in worker.connections("tcp")
                if c.raddr and c.laddr.port == server.port}
        return ports <= held

    eventually(accepted_by_workers, "every request accepted by a worker")
    in_flight = [sock for sock in clients if not select.select([sock], [], [], 0)[0]]
    server.process.send_signal(signal.SIGTERM)
    statuses = []
    for sock in clients:
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        statuses.append(response.status if b'"predictions"' in body else f"{response.status} {body[:100]!r}")
        sock.close()
    print(f"\ngraceful stop: {statuses.count(200)} of {len(clients)} requests answered 200,"
          f" {len(in_flight)} of them unanswered when SIGTERM came")
    assert in_flight, "every request was answered before the signal: nothing was tested"
    assert statuses == [200] * len(clients), statuses
    assert server.process.wait(60) == 0
    with pytest.raises(requests.ConnectionError):  # and it really stopped listening
        requests.get(server.url + "/healthz", timeout=5)
