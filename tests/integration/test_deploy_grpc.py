"""The gRPC service in the deployments (docs/grpc.md): compose, HAProxy, the Kubernetes overlay, KServe.

Rendered and schema-checked like tests/integration/test_deploy.py (whose helpers this reuses); every port and
setting is compared with shared/config.py and docker-compose.yml.
"""

from __future__ import annotations

import kubernetes_validate
import yaml
from conftest import ROOT
from helpers import compose_config
from test_deploy import HAPROXY_CFG, KUBERNETES, KUBERNETES_VERSION, SETTINGS, objects, one, plain_env, render

GRPC_PORT = int(SETTINGS["GRPC_PORT"].metadata["default"])
COMMAND = ["python", "-m", "server.transports.grpc_server"]


def test_haproxy_balances_h2c_per_request_to_the_grpc_replicas() -> None:
    config = HAPROXY_CFG.read_text()
    assert f"bind :{GRPC_PORT} proto h2" in config
    backend = config.split("backend grpc_servers", 1)[1].split("\nfrontend ", 1)[0]
    # HTTP mode (the defaults) with h2 to the servers: each call is routed, not each connection.
    assert "mode tcp" not in config and "balance roundrobin" in backend
    assert f"grpc:{GRPC_PORT} proto h2" in backend and "retry-on conn-failure" in backend


def test_kubernetes_overlay_adds_a_grpc_container_port_and_probe() -> None:
    docs = render(KUBERNETES / "overlays" / "grpc")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    containers = {container["name"]: container for container in pod["containers"]}
    grpc, server = containers["grpc"], containers["server"]
    assert grpc["image"] == server["image"] and grpc["command"] == COMMAND
    assert grpc["ports"] == [{"name": "grpc", "containerPort": GRPC_PORT}]
    assert grpc["readinessProbe"]["grpc"]["port"] == GRPC_PORT
    compose = compose_config("docker-compose.yml")["services"]["grpc"]["environment"]
    env = plain_env(grpc)
    assert env.pop("GRPC_PORT") == str(GRPC_PORT) and all(compose[name] == value for name, value in env.items())
    assert all(mount["readOnly"] for mount in grpc["volumeMounts"] if mount["mountPath"] == "/data")
    (service,) = objects(docs, "Service")
    port = next(port for port in service["spec"]["ports"] if port["name"] == "grpc")
    assert (port["port"], port["targetPort"], port["appProtocol"]) == (GRPC_PORT, "grpc", "kubernetes.io/h2c")


def test_kserve_grpc_predictor_names_its_port_h2c() -> None:
    service = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice-grpc.yaml").read_text())
    (container,) = service["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container" and container["command"] == COMMAND
    assert container["ports"] == [{"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"}]
    assert container["readinessProbe"]["grpc"]["port"] == GRPC_PORT
    assert {var["name"] for var in container["env"]} - {"STORAGE_URI"} <= set(SETTINGS)
