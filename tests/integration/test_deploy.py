"""The Kubernetes and KServe manifests (deploy/), and the HAProxy config, checked against the code.

No cluster runs here, so this is what stands for one: the kustomize base and overlay are rendered
with `kubectl kustomize` (kustomize v5, built into kubectl), every object is validated against the
Kubernetes JSON schemas (PyPI `kubernetes-validate`, which ships them, so no network), and every
image, setting, probe, port, user and volume is compared with the Dockerfile, shared/config.py,
docker-compose.yml and the Flask app's own URL map.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from conftest import ROOT
from helpers import DOCKERFILE, compose_config, stage

from server.app import create_app
from shared.config import Config, parse_setting

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = (KUBERNETES / "base", KUBERNETES / "overlays" / "retrain")
INFERENCE_SERVICE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
KUBERNETES_VERSION = "1.32.0"  # the schemas the objects must satisfy (kubectl here is 1.32 too)
# Variables read by KServe itself rather than by our code, and why they are there.
KSERVE_VARIABLES = {"STORAGE_URI"}  # where KServe mounts the model store from (/mnt/models)
SETTINGS = {spec.metadata["env"]: spec for spec in dataclasses.fields(Config)}
IMAGE_USER = "10001"  # `USER 10001:10001` in every runtime stage of the Dockerfile


def render(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with kustomize built in) is needed to render deploy/kubernetes"
    result = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {folder.name: render(folder) for folder in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def inference_service() -> dict:
    return yaml.safe_load(INFERENCE_SERVICE.read_text())


@pytest.fixture(scope="module")
def routes() -> set[str]:
    """GET routes the app serves (probes are GETs)."""
    app = create_app(Config(), watch=False)
    return {rule.rule for rule in app.url_map.iter_rules() if "GET" in (rule.methods or ())}


@pytest.fixture(scope="module")
def workloads(rendered: dict[str, list[dict]], inference_service: dict) -> list[tuple[str, dict]]:
    """(name, pod spec) of every workload: the overlay's (the base's plus the CronJob) and KServe's predictor."""
    return [*pod_specs(rendered["retrain"]), ("inferenceservice", inference_service["spec"]["predictor"])]


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = objects(docs, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict]]:
    """(object name, pod spec) of every workload."""
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], spec["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


def plain_env(container: dict) -> dict[str, str]:
    return {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}


def test_kustomizations_list_every_manifest_beside_them() -> None:
    for folder in KUSTOMIZATIONS:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        files = {entry for entry in kustomization["resources"] if entry.endswith(".yaml")}
        assert files == {path.name for path in folder.glob("*.yaml")} - {"kustomization.yaml"}, folder


def test_every_object_passes_the_kubernetes_schemas(rendered: dict[str, list[dict]]) -> None:
    base, overlay = rendered["base"], rendered["retrain"]
    assert sorted(doc["kind"] for doc in base) == sorted(
        ["PersistentVolumeClaim", "Job", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    )
    assert sorted(doc["kind"] for doc in overlay) == sorted([doc["kind"] for doc in base] + ["CronJob"])
    for doc in overlay:
        # strict: an unknown or misspelt field is an error, not silently dropped by the cluster.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelt_field(rendered: dict[str, list[dict]]) -> None:
    deployment = copy.deepcopy(one(rendered["base"], "Deployment"))
    mount = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    mount["readonly"] = mount.pop("readOnly")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_images_are_the_dockerfiles_targets_and_run_as_its_user(workloads: list[tuple[str, dict]]) -> None:
    services = compose_config("docker-compose.yml")["services"]
    compose_images = {service["image"]: service["build"]["target"] for service in services.values()}
    for name, pod in workloads:
        for container in pod["containers"]:
            image = container["image"]
            target = re.fullmatch(r"mnist-(\w+):\w+", image)
            assert target, f"{name}: image {image} is not one the Dockerfile builds (mnist-<target>:<tag>)"
            stage(target.group(1))  # the target exists
            assert compose_images.get(image) == target.group(1), f"{name}: compose builds {image} differently"
            assert re.search(rf"^USER {IMAGE_USER}:{IMAGE_USER}$", stage(target.group(1)), flags=re.MULTILINE)
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert str(pod["securityContext"]["runAsUser"]) == IMAGE_USER, name
    assert "FROM python:3.11-slim-bookworm AS base" in DOCKERFILE


def test_every_variable_is_a_setting_with_a_valid_value(workloads: list[tuple[str, dict]]) -> None:
    for name, pod in workloads:
        for container in pod["containers"]:
            for var in container.get("env", []):
                if name == "inferenceservice" and var["name"] in KSERVE_VARIABLES:
                    continue
                assert var["name"] in SETTINGS, f"{name}: {var['name']} is not a setting in shared/config.py"
                if "value" in var:
                    parse_setting(SETTINGS[var["name"]].name, var["value"])  # raises on a bad value


def test_trainer_job_has_composes_settings_and_the_cronjob_differs_only_in_retraining(
    rendered: dict[str, list[dict]],
) -> None:
    compose = compose_config("docker-compose.yml")["services"]["trainer"]["environment"]
    job = one(rendered["retrain"], "Job")["spec"]["template"]
    assert plain_env(job["spec"]["containers"][0]) == compose
    cron = copy.deepcopy(one(rendered["retrain"], "CronJob")["spec"]["jobTemplate"]["spec"]["template"])
    retrain = {var["name"]: var for var in cron["spec"]["containers"][0]["env"]}
    assert retrain["SKIP_IF_PUBLISHED"]["value"] == "false"
    retrain["SKIP_IF_PUBLISHED"]["value"] = "true"
    assert cron == job, "the CronJob's pod should be the trainer Job's pod with SKIP_IF_PUBLISHED=false"
    mount = job["spec"]["containers"][0]["volumeMounts"][0]
    assert mount["mountPath"] == "/data" and not mount.get("readOnly")


def test_server_settings_probes_and_read_only_volumes(
    rendered: dict[str, list[dict]], routes: set[str]
) -> None:
    base = rendered["base"]
    deployment = one(base, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    compose = compose_config("docker-compose.yml")["services"]["server"]["environment"]
    env = plain_env(container)
    assert env and all(compose[name] == value for name, value in env.items()), (env, compose)
    assert {var["name"] for var in container["env"]} == set(compose), "the same settings as compose's server"
    # Probes: routes the app serves, on the port gunicorn listens on.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": int(SETTINGS["PORT"].metadata["default"])}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and get["path"] in routes and ports[get["port"]] == 8000
    # The store is read-only for the server, twice over; the root filesystem too, with /tmp writable.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    store = mounts["/data"]
    assert store["readOnly"] is True and volumes[store["name"]]["persistentVolumeClaim"]["readOnly"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert container["resources"]["requests"]["cpu"], "the HPA's CPU target needs a CPU request"


def test_service_hpa_pdb_and_claim_fit_the_deployment(rendered: dict[str, list[dict]]) -> None:
    base = rendered["base"]
    deployment = one(base, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service, hpa, pdb = one(base, "Service"), one(base, "HorizontalPodAutoscaler"), one(base, "PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                              "name": deployment["metadata"]["name"]}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"], "a drain must leave one replica serving"
    claim = one(base, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name, pod in pod_specs(rendered["retrain"]):
        claims = {volume["persistentVolumeClaim"]["claimName"] for volume in pod["volumes"]
                  if "persistentVolumeClaim" in volume}
        assert claims == {claim["metadata"]["name"]}, name


def test_inference_service_is_a_v2_custom_predictor(inference_service: dict, routes: set[str]) -> None:
    assert inference_service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert inference_service["kind"] == "InferenceService"
    predictor = inference_service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert [port["containerPort"] for port in container["ports"]] == [int(SETTINGS["PORT"].metadata["default"])]
    env = plain_env(container)
    # KServe mounts the claim at /mnt/models; the store's layout under MNIST_HOME stays as it is.
    assert env["STORAGE_URI"].startswith("pvc://") and env["MNIST_HOME"] == "/mnt/models"
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]  # HTTP, not KServe's default TCP check
        assert get["path"].startswith("/v2/health/") and get["path"] in routes and get["port"] == 8000
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert {volume["name"] for volume in predictor["volumes"] if "emptyDir" in volume} == {mounts["/tmp"]}
    # The pod-level fields KServe passes through must be valid Kubernetes pod fields.
    pod = {key: value for key, value in predictor.items() if key not in ("minReplicas", "maxReplicas",
                                                                         "scaleMetric", "scaleTarget")}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod},
                                 KUBERNETES_VERSION, strict=True)


def test_haproxy_checks_a_route_on_the_servers_port(routes: set[str]) -> None:
    config = HAPROXY_CFG.read_text()
    check = re.search(r"^\s*option httpchk GET (\S+)$", config, flags=re.MULTILINE)
    assert check and check.group(1) == "/readyz" and "/readyz" in routes
    template = re.search(r"^\s*server-template \S+ \S+ (\w+):(\d+) ", config, flags=re.MULTILINE)
    assert template, "no server-template line"
    services = compose_config("docker-compose.yml")["services"]
    assert template.group(1) in services and template.group(2) == SETTINGS["PORT"].metadata["default"]
    # Safe to retry only with the body in hand, and only where a retry goes to another replica.
    assert "option http-buffer-request" in config and re.search(r"^\s*option redispatch", config, re.MULTILINE)
    assert re.search(r"^\s*retry-on .*conn-failure.*empty-response", config, flags=re.MULTILINE)
    assert "http-response set-header X-Served-By %s" in config
    stats_port = re.search(r"^frontend stats\n\s+bind :(\d+)$", config, flags=re.MULTILINE)
    published = {port["target"]: port["host_ip"] for port in services["proxy"]["ports"]}
    assert stats_port and published[int(stats_port.group(1))] == "127.0.0.1", "stats must stay on loopback"
