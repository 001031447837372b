"""`docker compose -f docker-compose.yml -f docker-compose.monitoring.yml up` with two replicas (REPLICAS=2 gives
two HTTP and two gRPC processes): Prometheus (Debian's package on the project's base image) scrapes all four and
HAProxy, holds the server's series, and when one replica stops, its MnistReplicaDown alert goes pending. Built on
test_compose.py's Stack."""

from __future__ import annotations

import requests
from conftest import free_port
from helpers import eventually
from test_compose import BUILD_TIMEOUT, READY_TIMEOUT, Stack, brought_down, require_docker

FILES = "-f docker-compose.yml -f docker-compose.test.yml -f docker-compose.monitoring.yml"


def _until(prometheus: str, path: str, check, what: str, timeout: float = 90) -> dict:
    answer: dict = {}

    def seen() -> bool:
        nonlocal answer
        try:
            answer = requests.get(prometheus + path, timeout=5).json()
        except (requests.ConnectionError, ValueError):
            return False  # Prometheus still starting
        return answer.get("status") == "success" and check(answer["data"])

    eventually(seen, what, timeout, interval=1, detail=lambda: f"last answer: {answer}")
    return answer["data"]


def _query(expression: str) -> str:
    return "/api/v1/query?query=" + requests.utils.quote(expression)


def test_prometheus_scrapes_every_replica_and_alerts_when_one_stops() -> None:
    require_docker()
    prometheus_port = free_port()
    stack = Stack("mnist-monitoring", REPLICAS="2", PROMETHEUS_PORT=str(prometheus_port))
    stack.compose = f"docker compose -p {stack.project} {FILES}"
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    with brought_down(stack):
        stack.run("build", timeout=BUILD_TIMEOUT)
        stack.run("up", "-d", "--wait", timeout=READY_TIMEOUT)  # every replica healthy (as `make up`)
        for _ in range(3):
            assert requests.get(stack.url + "/models", timeout=10).status_code == 200

        def both_up(data: dict) -> bool:
            return sorted(float(sample["value"][1]) for sample in data["result"]) == [1.0, 1.0]
        _until(prometheus, _query('up{job="mnist-server"}'), both_up, "both server replicas up")
        _until(prometheus, _query('up{job="mnist-grpc"}'), both_up, "both gRPC replicas up")
        # One series per process (GRPC_PROCESSES per replica, label pid): a replica serves when all its processes do.
        _until(prometheus, _query('count by (job) (min by (job, instance) '
                                  '(mnist_model_served_version{job="mnist-grpc"}) > 0)'),
               lambda data: [sample["value"][1] for sample in data["result"]] == ["2"], "a model in both gRPC replicas")
        _until(prometheus, _query('up{job="haproxy"} == 1'), lambda data: len(data["result"]) == 1, "HAProxy up")
        _until(prometheus, _query('mnist_requests_total{protocol="http", route="/models", status="200"}'),
               lambda data: len(data["result"]) >= 1, "the server's request counter")

        replica = stack.run("ps", "-q", "server").split()[0]
        stack._run(["docker", "stop", "-t", "5", replica], 60)

        def replica_down(data: dict) -> bool:
            return any(alert["labels"]["alertname"] == "MnistReplicaDown" and alert["state"] in ("pending", "firing")
                       for alert in data["alerts"])
        _until(prometheus, "/api/v1/alerts", replica_down, "MnistReplicaDown pending")
