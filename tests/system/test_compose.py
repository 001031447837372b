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
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import requests
from conftest import ROOT, SHARED_MNIST, SHARED_MNIST_SHA256, free_port

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

    def wait_healthy(self, timeout: float = READY_TIMEOUT) -> None:
        """Until Docker reports the server container healthy (its HEALTHCHECK) and /readyz answers 200."""
        deadline = time.monotonic() + timeout
        status = "no container"
        while time.monotonic() < deadline:
            container = self.run("ps", "-q", "server").strip()
            if container:
                status = self._run(["docker", "inspect", "-f", "{{.State.Health.Status}}", container], 30).strip()
                if status == "healthy" and self.answers("/readyz"):
                    return
            time.sleep(0.5)
        raise TimeoutError(f"server not healthy after {timeout} s (last: {status}):\n{self.logs()[-6000:]}")

    def answers(self, path: str) -> bool:
        """Whether the published port (the proxy, which may still be starting) answers `path` with 200."""
        try:
            return requests.get(self.url + path, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    def served_version(self) -> int:
        return requests.get(self.url + "/models", timeout=10).json()["served_version"]

    def wait_for_version(self, version: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.served_version() != version:
            assert time.monotonic() < deadline, f"server still serves {self.served_version()}, not {version}"
            time.sleep(0.5)

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


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = docker_unavailable()
    if reason:
        pytest.skip(reason)
    stack = Stack()
    try:
        yield stack
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            (ARTIFACTS / f"{stack.project}.log").write_text(stack.logs())
        finally:
            stack.run("down", "-v", "--remove-orphans", "--timeout", "10")
        assert stack.leftovers() == {"containers": [], "networks": [], "volumes": []}


@dataclass(frozen=True)
class Answer:
    at: float  # time.monotonic() when the answer arrived
    served_by: str  # the proxy's X-Served-By: which replica answered (srv1, srv2, ...)
    version: int


@dataclass
class PredictionStream:
    """Sends one real digit per request from a background thread until stopped (bounded)."""

    url: str
    images: np.ndarray
    pause: float = 0.05  # between requests: leave the shared cores to the trainer
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    @property
    def versions(self) -> list[int]:
        return [answer.version for answer in self.answers]

    def _send(self) -> None:
        session = requests.Session()
        for count in range(MAX_STREAM_REQUESTS):
            if self.stop.is_set():
                return
            image = self.images[count % len(self.images)]
            try:
                response = session.post(self.url, json={"instances": [image.tolist()]}, timeout=15)
                if response.status_code == 200:
                    served_by = response.headers.get("X-Served-By", "")
                    self.answers.append(Answer(time.monotonic(), served_by, response.json()["model_version"]))
                else:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
            except requests.RequestException as error:
                self.failures.append(repr(error))
            time.sleep(self.pause)

    def wait_for(self, more: int, timeout: float = 60) -> None:
        """Until `more` further answers arrived (or a request failed); the stream goes on meanwhile."""
        target = len(self.answers) + more
        deadline = time.monotonic() + timeout
        while len(self.answers) < target and not self.failures:
            assert self.thread.is_alive(), "the stream stopped"
            assert time.monotonic() < deadline, f"only {len(self.answers)} of {target} answers in {timeout} s"
            time.sleep(0.1)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def predict(stack: Stack, images: np.ndarray) -> tuple[int, np.ndarray]:
    response = requests.post(stack.url + "/predict", json={"instances": images.tolist()}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == len(images)
    return body["model_version"], np.array([prediction["label"] for prediction in body["predictions"]])


def test_compose_stack_end_to_end(stack: Stack) -> None:
    with np.load(SHARED_MNIST) as mnist:
        images, labels = mnist["x_test"][:64], mnist["y_test"][:64]

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
        deadline = time.monotonic() + 30
        while 2 not in stream.versions and not stream.failures and time.monotonic() < deadline:
            time.sleep(0.2)
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
    versions_before = version_rows(stack.make("status", timeout=120))
    output = stack.make("retrain", "WORKERS=2", "EPOCHS=1", timeout=900)
    assert "training data-parallel on 2 devices in 2 processes" in output, output
    [published] = re.findall(r"published version (\d+)", output)
    checksums = dict(re.findall(r"process (\d) of 2 trained weights checksum ([0-9a-f]{16})", output))
    assert set(checksums) == {"0", "1"} and checksums["0"] == checksums["1"], output
    stack.wait_for_version(int(published))
    assert len(version_rows(stack.make("status", timeout=120))) == len(versions_before) + 1
