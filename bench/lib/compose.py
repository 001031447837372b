"""The compose stack as a benchmark target: docker-compose.yml at its defaults, HAProxy in front, on free
loopback ports, with a model already in its volume.

Containers have no internet, and training inside one would spend the shared cores before the measurement,
so the volume is created first and seeded with a model the benchmark trained on the host
(`bench.parts.hostile.ensure_model`); the trainer then finds a published version and exits at once
(SKIP_IF_PUBLISHED). Its own image names (IMAGE_PREFIX) keep a developer's images untouched; `down -v`
removes everything the project made. Figures come from the host: worker PIDs under each server container's
gunicorn master (Docker's PIDs are the host's), Docker's RestartCount, and the logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil

from bench.common import ROOT
from bench.lib.processes import children, free_port
from shared.config import Config

IMAGE_PREFIX = "mnist-bench"
BUILD_TIMEOUT = 1800  # a cold build installs TensorFlow into the trainer image
READY_TIMEOUT = 300
# Host variables docker-compose.yml reads: unset, so a developer's shell cannot change the stack measured.
COMPOSE_VARIABLES = {spec.metadata["env"] for spec in Config.__dataclass_fields__.values()} | {
    "PUBLISH_ADDRESS", "PROXY_STATS_PORT", "REPLICAS", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "IMAGE_PREFIX"}


def docker_unavailable() -> str | None:
    """Why the stack cannot run here, or None."""
    if not shutil.which("docker"):
        return "no docker command"
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`docker info` failed ({error})"
    return None if result.returncode == 0 else "no Docker engine answers `docker info`"


class Stack:
    """One compose project (docker-compose.yml only: the production defaults) with a unique name."""

    def __init__(self, name: str, **env: str) -> None:
        self.project = f"{name}-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {key: value for key, value in os.environ.items() if key not in COMPOSE_VARIABLES}
        self.env.update(IMAGE_PREFIX=IMAGE_PREFIX, PORT=str(self.port), PROXY_STATS_PORT=str(free_port()),
                        GRPC_PORT=str(free_port()), **env)
        self.compose = ["docker", "compose", "-p", self.project, "-f", "docker-compose.yml"]

    def _run(self, command: list[str], timeout: float = 120) -> str:
        result = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-4000:]
            raise RuntimeError(f"{shlex.join(command)} exited {result.returncode}:\n{output}")
        return result.stdout

    def run(self, *args: str, timeout: float = 120) -> str:
        return self._run([*self.compose, *args], timeout)

    def up(self, model_store: Path) -> None:
        """Build, seed the volume with `model_store` (a store's `mnist/` folder), start, wait until healthy."""
        self.run("build", timeout=BUILD_TIMEOUT)
        volume = f"{self.project}_store"
        # The labels compose gives its own volumes, so it adopts this one (and `down -v` removes it).
        self._run(["docker", "volume", "create", "--label", f"com.docker.compose.project={self.project}",
                   "--label", "com.docker.compose.volume=store", volume])
        # Read as root (a test's temporary folder is private to its owner), then given to the image's user, the
        # server's, as if the trainer had published it.
        self._run(["docker", "run", "--rm", "--user", "0", "-v", f"{volume}:/data", "-v", f"{model_store}:/src:ro",
                   "--entrypoint", "sh", f"{IMAGE_PREFIX}-server:latest", "-c",
                   "cp -r /src /data/mnist && chown -R app:app /data/mnist"])
        self.run("up", "-d", "--wait", timeout=READY_TIMEOUT)
        with urllib.request.urlopen(self.url + "/readyz", timeout=10) as answer:
            if answer.status != 200:
                raise RuntimeError(f"{self.url}/readyz answered {answer.status} through the proxy")

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180)

    def containers(self, service: str = "server") -> list[str]:
        return self.run("ps", "-q", service).split()

    def inspect(self, container: str) -> dict:
        return json.loads(self._run(["docker", "inspect", container]))[0]

    def address(self, service: str) -> str:
        """The service's (first) container's address on the project's network, reachable from the Docker host."""
        networks = self.inspect(self.containers(service)[0])["NetworkSettings"]["Networks"]
        return next(iter(networks.values()))["IPAddress"]

    def restart_counts(self) -> dict[str, int]:
        """Docker's RestartCount of each server container (a container whose gunicorn died and came back)."""
        return {container: self.inspect(container)["RestartCount"] for container in self.containers()}

    def masters(self) -> list[int]:
        """Host PIDs of the gunicorn masters: each server container's first process."""
        return [self.inspect(container)["State"]["Pid"] for container in self.containers()]

    def workers(self) -> list[psutil.Process]:
        return [worker for master in self.masters() for worker in children(master)]

    def logs(self, service: str = "server") -> str:
        return self.run("logs", "--no-color", service)

    def worker_boots(self) -> int:
        """gunicorn's "Booting worker" lines: one per worker start, so more than WEB_CONCURRENCY is a restart."""
        return self.logs().count("Booting worker")


@contextlib.contextmanager
def running(name: str, model_store: Path, **env: str) -> Iterator[Stack]:
    """A stack up for the block, and down (volume included) after it, even when it fails to start."""
    stack = Stack(name, **env)
    try:
        stack.up(model_store)
        yield stack
    finally:
        stack.down()
