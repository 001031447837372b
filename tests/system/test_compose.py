"""End to end through real containers: `docker compose up --build`, predictions over the published
port, `make retrain` under traffic, `make rollback`, a second `up` on the populated volume, and
`docker compose down -v` leaving nothing behind.

Skipped (with the reason) only when no Docker engine answers `docker info`; CI's `.ci/run` starts
one where the CI machine provides it. Containers have no internet, so docker-compose.test.yml
bind-mounts the suite's mnist.npz (conftest's SHARED_MNIST) into the trainer and trains a short run on a slice.
The measured times go to test-artifacts/compose-timings.json.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
import requests
from conftest import ROOT, SHARED_MNIST, SHARED_MNIST_SHA256, free_port
from helpers import CallFailed, CallStream, eventually, first_test_digits

from shared.config import Config

ARTIFACTS = ROOT / "test-artifacts"
BUILD_TIMEOUT = 1800  # a cold build downloads and installs TensorFlow
READY_TIMEOUT = 300  # trains one short epoch first on an empty volume
MAX_STREAM_REQUESTS = 6000  # a background stream of predictions is bounded
# Host variables the compose files read; unset so a developer's shell cannot change the test's stack.
COMPOSE_VARIABLES = {spec.metadata["env"] for spec in Config.__dataclass_fields__.values()} | {
    "PUBLISH_ADDRESS",
    "PROXY_STATS_PORT",
    "REPLICAS",
    "COMPOSE_FILE",
    "COMPOSE_PROJECT_NAME",
}


def docker_unavailable() -> str | None:
    """Why no Docker engine can be used, or None when `docker info` answers."""
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"no Docker engine: `docker info` failed ({error})"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers `docker info` ({last}); .ci/run starts one where CI allows"
    return None


def require_docker() -> None:
    """Skip the test, saying why, when no Docker engine answers."""
    if reason := docker_unavailable():
        pytest.skip(reason)


class Stack:
    """One compose project with a unique name, driven through `docker compose` and `make`."""

    def __init__(self, name: str = "mnist-e2e", **env: str) -> None:
        self.project = f"{name}-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The proxy's loopback stats port: a free one too, so stacks of parallel runs never clash.
        stats_port = free_port()
        self.stats_url = f"http://127.0.0.1:{stats_port}"
        self.grpc_address = f"127.0.0.1:{free_port()}"  # the proxy's gRPC port (docs/grpc.md), free too
        self.compose = f"docker compose -p {self.project} -f docker-compose.yml -f docker-compose.test.yml"
        self.env = {key: value for key, value in os.environ.items() if key not in COMPOSE_VARIABLES}
        self.env.update(MNIST_FILE=str(SHARED_MNIST), MNIST_FILE_SHA256=SHARED_MNIST_SHA256,
                        PORT=str(self.port), PROXY_STATS_PORT=str(stats_port),
                        GRPC_PORT=self.grpc_address.rsplit(":", 1)[1], **env)
        self.timings: dict[str, float] = {}

    def _run(self, command: list[str], timeout: float) -> str:
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        output = result.stdout + result.stderr
        assert result.returncode == 0, f"{shlex.join(command)} exited {result.returncode}:\n{output[-6000:]}"
        return output

    def run(self, *args: str, timeout: float = 120) -> str:
        return self._run([*shlex.split(self.compose), *args], timeout)

    def make(self, target: str, *variables: str, timeout: float = 600) -> str:
        return self._run(["make", "--no-print-directory", target, f"COMPOSE={self.compose}", *variables], timeout)

    def timed(self, name: str, started: float) -> None:
        self.timings[name] = round(time.monotonic() - started, 1)

    def health(self, service: str) -> str:
        """Docker's health status of the service's (first) container (its HEALTHCHECK), or "no container"."""
        container = self.run("ps", "-q", service).split()[:1]
        if not container:
            return "no container"
        return self._run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container[0]], 30).strip()

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        """Until Docker reports the server container healthy and /readyz answers 200 through the proxy."""
        eventually(lambda: self.health("server") == "healthy" and self.answers("/readyz"), "healthy server",
                   timeout, interval=0.5, detail=lambda: f"{self.health('server')}:\n{self.logs()[-6000:]}")

    def up_unless_serving(self) -> None:
        """Build and start the stack unless it already answers /readyz (for tests that only need it running)."""
        if not self.answers("/readyz"):
            self.run("build", timeout=BUILD_TIMEOUT)
            self.run("up", "-d", timeout=READY_TIMEOUT)
            self.wait_healthy()

    def answers(self, path: str) -> bool:
        """Whether the published port (the proxy, which may still be starting) answers `path` with 200."""
        try:
            return requests.get(self.url + path, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def served_version(self) -> int:
        return requests.get(self.url + "/models", timeout=10).json()["served_version"]

    def wait_for_version(self, version: int, timeout: float = 60) -> None:
        eventually(lambda: self.served_version() == version, f"version {version} served", timeout, interval=0.5,
                   detail=lambda: f"still serves {self.served_version()}")

    def logs(self, *services: str) -> str:
        return self.run("logs", "--no-color", *services)

    def leftovers(self) -> dict[str, list[str]]:
        label = f"label=com.docker.compose.project={self.project}"
        listings = {
            "containers": ["docker", "ps", "-aq", "--filter", label],
            "networks": ["docker", "network", "ls", "-q", "--filter", label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
        }
        return {kind: self._run(command, 60).split() for kind, command in listings.items()}


@contextmanager
def brought_down(stack: Stack) -> Iterator[Stack]:
    """On the way out: the stack's logs to test-artifacts/, `down -v`, and nothing of it left behind."""
    try:
        yield stack
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            (ARTIFACTS / f"{stack.project}.log").write_text(stack.logs())
        finally:
            stack.run("down", "-v", "--remove-orphans", "--timeout", "10")
    assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """One project for the module, not yet up: each test brings it to the state it needs (the end-to-end test
    starts from `down -v`, the others from `up_unless_serving`), so they pass in any order."""
    require_docker()
    with brought_down(Stack()) as stack:
        yield stack


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer arrived
    served_by: str  # the proxy's X-Served-By: which replica answered (srv1, srv2, ...)
    version: int


class PredictionStream(CallStream[Answer]):
    """Posts one real digit per request to `url` from a background thread until finished (bounded)."""

    def __init__(self, url: str, images: np.ndarray, pause: float = 0.05) -> None:
        # `pause` between requests: leave the shared cores to the trainer.
        self.url, self.images, self.session = url, images, requests.Session()
        super().__init__(self._predict, pause, MAX_STREAM_REQUESTS)

    @property
    def answers(self) -> list[Answer]:
        return self.results

    @property
    def versions(self) -> list[int]:
        return [answer.version for answer in self.results]

    def _predict(self, count: int) -> Answer:
        image = self.images[count % len(self.images)]
        try:
            response = self.session.post(self.url, json={"instances": [image.tolist()]}, timeout=15)
        except requests.RequestException as error:
            raise CallFailed(repr(error)) from None
        if response.status_code != 200:
            raise CallFailed(f"{response.status_code}: {response.text[:200]}")
        return Answer(time.monotonic(), response.headers.get("X-Served-By", ""), response.json()["model_version"])


def predict(stack: Stack, images: np.ndarray) -> tuple[int, np.ndarray]:
    response = requests.post(stack.url + "/predict", json={"instances": images.tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == len(images)
    return body["model_version"], np.array([prediction["label"] for prediction in body["predictions"]])


def test_compose_stack_end_to_end(stack: Stack) -> None:
    images, labels = first_test_digits(SHARED_MNIST, 64)
    stack.run("down", "-v", "--remove-orphans", "--timeout", "10")  # an empty volume, whatever ran before

    started = time.monotonic()
    stack.run("build", timeout=BUILD_TIMEOUT)
    stack.timed("build_s", started)

    started = time.monotonic()
    stack.run("up", "-d", timeout=READY_TIMEOUT)
    stack.wait_healthy()
    stack.timed("up_empty_volume_to_ready_s", started)
    assert "published version 1" in stack.logs("trainer")

    # The server image carries no TensorFlow and runs as a non-root user.
    check = "import importlib.util, os; assert importlib.util.find_spec('tensorflow') is None; assert os.getuid() != 0"
    stack.run("run", "--rm", "--no-deps", "--quiet-build", "--entrypoint", "python", "server", "-c", check)

    version, predicted = predict(stack, images)
    assert version == 1
    assert (predicted == labels).mean() >= 0.7, f"accuracy {(predicted == labels).mean():.2f} on real test digits"

    # Retrain through make while a stream of predictions runs: none may fail, and the stream sees the switch.
    stream = PredictionStream(stack.url + "/predict", images)
    try:
        started = time.monotonic()
        stack.make("retrain", "EPOCHS=1")
        stack.timed("retrain_s", started)
        stack.wait_for_version(2)
        eventually(lambda: 2 in stream.versions or stream.failures, "version 2 in the stream's answers", timeout=30,
                   interval=0.2)
    finally:
        stream.finish()
    assert not stream.failures, f"{len(stream.failures)} failed requests during the reload: {stream.failures[:5]}"
    assert stream.versions and {1, 2} <= set(stream.versions), f"versions seen: {sorted(set(stream.versions))}"

    status = stack.make("status", timeout=120)
    assert "served by the running server: version 2" in status, status

    stack.make("rollback", timeout=120)
    stack.wait_for_version(1)
    assert predict(stack, images[:4])[0] == 1

    # A second `up` on the populated volume does not train again and is ready in seconds.
    stack.run("down", "--timeout", "10")
    started = time.monotonic()
    stack.run("up", "-d", timeout=READY_TIMEOUT)
    stack.wait_healthy()
    stack.timed("up_populated_volume_to_ready_s", started)
    assert "not training (SKIP_IF_PUBLISHED)" in stack.logs("trainer")
    assert stack.served_version() == 1

    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "compose-timings.json").write_text(json.dumps(stack.timings, indent=2) + "\n")
    print(f"compose timings: {stack.timings}")


def version_rows(status: str) -> list[str]:
    """The version lines of `make status` (the store's listing, not the server's line)."""
    return [line for line in status.splitlines() if line.split()[:1] and line.split()[0].isdigit()]


def test_make_retrain_with_two_workers_publishes_one_version(stack: Stack) -> None:
    """`make retrain WORKERS=2`: two trainer containers on the compose network train one model (JAX backend,
    scripts/retrain-workers.sh); process 0 alone publishes, with the same weights as process 1."""
    stack.up_unless_serving()
    versions_before = version_rows(stack.make("status", timeout=120))
    output = stack.make("retrain", "WORKERS=2", "EPOCHS=1", timeout=900)
    assert "training data-parallel on 2 devices in 2 processes" in output, output
    [published] = re.findall(r"published version (\d+)", output)
    checksums = dict(re.findall(r"process (\d) of 2 trained weights checksum ([0-9a-f]{16})", output))
    assert set(checksums) == {"0", "1"} and checksums["0"] == checksums["1"], output
    stack.wait_for_version(int(published))
    assert len(version_rows(stack.make("status", timeout=120))) == len(versions_before) + 1
