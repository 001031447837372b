"""deploy/kubernetes/overlays/multi-worker (an Indexed Job and its headless Service) checked against
the trainer's code, the way tests/integration/test_deploy.py checks the base: no cluster runs here."""

from __future__ import annotations

import dataclasses

import kubernetes_validate
import pytest
from test_deploy import KUBERNETES, KUBERNETES_VERSION, one, render

from shared.config import Config, ConfigError
from trainer.distributed import job_from

OVERLAY = KUBERNETES / "overlays" / "multi-worker"
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"
MULTI_WORKER_VARIABLES = {"KERAS_BACKEND", "SKIP_IF_PUBLISHED", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                          "KERAS_DISTRIBUTION_PROCESS_ID", "KERAS_DISTRIBUTION_JOB_ADDRESSES", "DISTRIBUTION_TIMEOUT"}


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return render(OVERLAY)


def environment(pod: dict) -> dict[str, dict]:
    [container] = pod["containers"]
    return {variable["name"]: variable for variable in container["env"]}


def test_every_object_passes_the_kubernetes_schemas(docs: list[dict]) -> None:
    assert sorted(doc["kind"] for doc in docs) == ["Job", "Service"]
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_each_pods_completion_index_is_its_process_index_and_the_trainer_accepts_the_settings(docs) -> None:
    job = one(docs, "Job")
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    env = environment(pod)
    processes = int(env["KERAS_DISTRIBUTION_NUM_PROCESSES"]["value"])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == processes > 1
    assert env["KERAS_DISTRIBUTION_PROCESS_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == INDEX_ANNOTATION
    settings = {name: variable["value"] for name, variable in env.items() if "value" in variable}
    settings_of = {spec.metadata["env"] for spec in dataclasses.fields(Config)}
    assert set(env) <= settings_of  # every variable is one of the trainer's settings
    for index in range(processes):  # what each pod's trainer makes of its variables
        config = Config.from_env({**settings, "KERAS_DISTRIBUTION_PROCESS_ID": str(index)})
        assert (job_from(config).processes, job_from(config).index) == (processes, index)
    with pytest.raises(ConfigError, match="must be below"):  # an index past the count would be refused
        job_from(Config.from_env({**settings, "KERAS_DISTRIBUTION_PROCESS_ID": str(processes)}))


def test_the_coordinator_address_is_pod_0_behind_the_headless_service(docs: list[dict]) -> None:
    job, service = one(docs, "Job"), one(docs, "Service")
    pod = job["spec"]["template"]
    host, port = environment(pod["spec"])["KERAS_DISTRIBUTION_JOB_ADDRESSES"]["value"].split(":")
    # An Indexed Job's pod is named <job>-<index>; with `subdomain` its DNS name is <job>-<index>.<service>.
    assert host == f"{job['metadata']['name']}-0.{service['metadata']['name']}"
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    assert int(port) in {p["port"] for p in service["spec"]["ports"]} & {p["containerPort"] for p in container["ports"]}


def test_the_workers_run_the_base_trainer_on_the_base_store_with_its_settings(docs: list[dict]) -> None:
    base = one(render(KUBERNETES / "base"), "Job")["spec"]["template"]["spec"]
    pod = one(docs, "Job")["spec"]["template"]["spec"]
    [worker], [trainer] = pod["containers"], base["containers"]
    assert worker["image"] == trainer["image"]
    assert pod["volumes"] == base["volumes"] and worker["volumeMounts"] == trainer["volumeMounts"]
    assert pod["securityContext"] == base["securityContext"]
    # The same training settings as the base Job, except the backend and the job's own variables.
    shared = {name: var for name, var in environment(pod).items() if name not in MULTI_WORKER_VARIABLES}
    assert shared == {name: var for name, var in environment(base).items() if name not in MULTI_WORKER_VARIABLES}
    assert environment(pod)["KERAS_BACKEND"]["value"] == "jax"
    assert environment(pod)["SKIP_IF_PUBLISHED"]["value"] == "false"
