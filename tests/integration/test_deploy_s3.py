"""deploy/kubernetes/overlays/s3 and deploy/kserve/inferenceservice-s3.yaml: the model store in a bucket.

Rendered and validated like tests/integration/test_deploy.py does the base: no claim is left, the trainer Job and
the server Deployment read MODEL_STORE (a value shared/config.py accepts) with the AWS credentials from
the Secret `mnist-s3`, and the server's copy of the bucket is a writable emptyDir."""

from __future__ import annotations

import kubernetes_validate
import yaml
from conftest import ROOT
from test_deploy import KUBERNETES, KUBERNETES_VERSION, SETTINGS, one, plain_env, pod_specs, render

from shared.config import parse_setting

OVERLAY = KUBERNETES / "overlays" / "s3"
INFERENCE_SERVICE = ROOT / "deploy" / "kserve" / "inferenceservice-s3.yaml"
SECRET = "mnist-s3"
SECRET_VARIABLES = {"AWS_ACCESS_KEY_ID": "access-key-id", "AWS_SECRET_ACCESS_KEY": "secret-access-key",
                    "AWS_ENDPOINT_URL": "endpoint-url"}


def assert_reads_the_bucket(name: str, pod: dict) -> None:
    (container,) = pod["containers"]
    env = {var["name"]: var for var in container["env"]}
    assert parse_setting(SETTINGS["MODEL_STORE"].name, env["MODEL_STORE"]["value"]).startswith("s3://"), name
    for variable, key in SECRET_VARIABLES.items():
        reference = env[variable]["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == (SECRET, key), (name, variable)
    assert set(env) <= set(SETTINGS) | set(SECRET_VARIABLES), f"{name}: {set(env) - set(SETTINGS)}"
    for variable, value in plain_env(container).items():
        parse_setting(SETTINGS[variable].name, value)
    assert not [volume for volume in pod["volumes"] if "persistentVolumeClaim" in volume], name
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    store = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/data")
    assert "emptyDir" in volumes[store["name"]] and not store.get("readOnly"), name


def test_the_s3_overlay_drops_the_claim_and_reads_the_bucket() -> None:
    docs = render(OVERLAY)
    base = render(KUBERNETES / "base")
    assert sorted(doc["kind"] for doc in docs) == sorted(doc["kind"] for doc in base
                                                         if doc["kind"] != "PersistentVolumeClaim")
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    workloads = dict(pod_specs(docs))
    assert set(workloads) == {one(docs, "Job")["metadata"]["name"], one(docs, "Deployment")["metadata"]["name"]}
    for name, pod in workloads.items():
        assert_reads_the_bucket(name, pod)
    # Everything else is the base's: the same settings, probes and security context.
    server, base_server = one(docs, "Deployment"), one(base, "Deployment")
    (container,), (base_container,) = (server["spec"]["template"]["spec"]["containers"],
                                       base_server["spec"]["template"]["spec"]["containers"])
    assert plain_env(container) == {**plain_env(base_container), "MODEL_STORE": plain_env(container)["MODEL_STORE"]}
    assert container["readinessProbe"] == base_container["readinessProbe"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_kserve_s3_variant_syncs_the_bucket_itself() -> None:
    service = yaml.safe_load(INFERENCE_SERVICE.read_text())
    predictor = service["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    # No STORAGE_URI: KServe's one-off copy at start would ignore the completion markers (the file says why).
    assert "STORAGE_URI" not in {var["name"] for var in container["env"]}
    assert plain_env(container)["MNIST_HOME"] == "/data"
    assert_reads_the_bucket("inferenceservice-s3", predictor)
    pod = {key: value for key, value in predictor.items() if key not in ("minReplicas", "maxReplicas",
                                                                         "scaleMetric", "scaleTarget")}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod},
                                 KUBERNETES_VERSION, strict=True)
