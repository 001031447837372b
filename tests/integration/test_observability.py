"""Operability through a real gunicorn (LOG_FORMAT=json, two workers, batching on) over the trained model:
every request gives exactly one JSON line with its id in the server's stdout (and no gunicorn access line),
the id an error answer carries finds its line, and every metric the Grafana dashboard queries is in /metrics.
The real gRPC process the same way: one JSON line per call (health and reflection too), an error's id one grep.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from conftest import LiveServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_process import GrpcProcess
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import eventually
from prometheus_client.parser import text_string_to_metric_families

from server.protocols import v2_grpc_messages as pb

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def live(trained_home: Path, start_module_server) -> Iterator[LiveServer]:
    yield start_module_server(trained_home, LOG_FORMAT="json", WEB_CONCURRENCY="2", BATCHING="true")


def _request_lines(server: LiveServer | GrpcProcess, ids: set[str]) -> list[dict]:
    """The server's request lines once every id in `ids` has one: a line is written after its answer was sent, so
    the client may have the answer before the line is in the log."""
    def lines() -> list[dict]:
        logged = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        return [line for line in logged if line["logger"] == "server.requests"]

    eventually(lambda: ids <= {line["request_id"] for line in lines()}, f"request lines for {sorted(ids)}", timeout=10,
               detail=server.log)
    return lines()


def test_one_json_line_per_request_and_an_error_id_finds_its_line(live: LiveServer) -> None:
    zero = np.zeros((2, 28, 28)).tolist()
    calls = [("GET", "/healthz", None), ("GET", "/models", None), ("GET", "/samples/test/3.png", None),
             ("POST", "/predict", {"instances": zero}), ("POST", "/v1/models/mnist:predict", {"instances": zero}),
             ("POST", "/v2/models/mnist/infer",
              {"inputs": [{"name": "images", "shape": [2, 28, 28], "datatype": "FP32",
                           "data": np.zeros(2 * 784).tolist()}]}),
             ("GET", "/no/such/path", None)]
    for number, (method, path, body) in enumerate(calls):
        response = requests.request(method, live.url + path, json=body, timeout=30,
                                    headers={"X-Request-ID": f"live-{number}"})
        assert response.headers["X-Request-ID"] == f"live-{number}"
    bad = requests.post(live.url + "/v2/models/mnist/infer", data=b"{oops", timeout=30)
    assert bad.status_code == 400
    error_id = bad.json()["request_id"]
    assert bad.headers["X-Request-ID"] == error_id

    lines = _request_lines(live, {f"live-{number}" for number in range(len(calls))} | {error_id})
    for number, (method, _path, _body) in enumerate(calls):
        (line,) = [line for line in lines if line["request_id"] == f"live-{number}"]
        assert line["method"] == method and line["latency_ms"] > 0 and line["client"] == "127.0.0.1"
    by_id = {line["request_id"]: line for line in lines}
    assert by_id["live-2"]["route"] == "/samples/<split>/<index>.png"
    assert by_id["live-6"]["route"] == "unmatched" and by_id["live-6"]["status"] == 404
    for number, protocol in ((3, "native"), (4, "tfserving"), (5, "v2")):
        assert (by_id[f"live-{number}"]["protocol"], by_id[f"live-{number}"]["images"]) == (protocol, 2)
        assert by_id[f"live-{number}"]["model_version"] == 1
    assert by_id[error_id]["status"] == 400 and by_id[error_id]["route"] == "/v2/models/mnist/infer"
    assert sum(error_id in line for line in live.log().splitlines()) == 1  # one grep, one line
    loggers = {json.loads(line)["logger"] for line in live.log().splitlines() if line.startswith("{")}
    assert "server.requests" in loggers and "gunicorn.access" not in loggers  # gunicorn's access line is off


def test_every_metric_the_dashboard_queries_is_exported(live: LiveServer) -> None:
    digits = {"instances": np.zeros((1, 28, 28)).tolist()}
    for _ in range(3):
        assert requests.post(live.url + "/predict", json=digits, timeout=30).status_code == 200
    exported = {sample.name for family in text_string_to_metric_families(requests.get(live.url + "/metrics",
                                                                                      timeout=30).text)
                for sample in family.samples}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(mnist_[a-z_]+)\b", target["expr"])}
    assert len(queried) >= 7
    assert queried <= exported, sorted(queried - exported)


def test_grpc_calls_give_one_json_line_each_and_an_errors_id_is_one_grep(trained_home: Path, tmp_path: Path) -> None:
    process = GrpcProcess(trained_home, tmp_path / "grpc.log", LOG_FORMAT="json", AUTH_TOKEN="s3cret")
    try:
        process.wait_serving()
        with grpc.insecure_channel(process.address) as channel:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                      metadata=[("x-request-id", "live-check")])
            list(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                metadata=[("x-request-id", "live-reflection")]))
            request = pb.ModelInferRequest(model_name="mnist")
            request.inputs.add(name="images", datatype="UINT8", shape=[1, 28, 28])
            request.raw_input_contents.append(bytes(784))
            infer = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer",
                                        request_serializer=pb.ModelInferRequest.SerializeToString,
                                        response_deserializer=pb.ModelInferResponse.FromString)
            with pytest.raises(grpc.RpcError) as raised:  # no token: UNAUTHENTICATED, its id in the details
                infer(request, timeout=30)
        error_id = re.search(r"\(request id ([0-9a-f]{32})\)$", raised.value.details())[1]
        wanted = {"live-check", "live-reflection", error_id}
        by_id = {line["request_id"]: line for line in _request_lines(process, wanted)}
        log = process.log()
    finally:
        process.stop()
    assert (by_id["live-check"]["route"], by_id["live-check"]["status"]) == ("/grpc.health.v1.Health/Check", "OK")
    assert by_id["live-reflection"]["method"] == "ServerReflectionInfo"
    assert (by_id[error_id]["status"], by_id[error_id]["protocol"]) == ("UNAUTHENTICATED", "grpc")
    assert sum(error_id in line for line in log.splitlines()) == 1  # one grep, one line
