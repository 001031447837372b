"""The model's life cycle under a running server: none yet, first model, a broken version,
a hot reload under load, a rollback, and a pinned version."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import assert_json_error
from helpers import eventually, every_worker, publish_copy, served

from shared.model_store import ModelStore

ZERO = [[0] * 28 for _ in range(28)]
WORKERS = 2


@pytest.fixture(scope="module")
def empty_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty-home")


@pytest.fixture(scope="module")
def server(empty_home: Path, start_module_server):
    live = start_module_server(empty_home, wait=False, WEB_CONCURRENCY=str(WORKERS), THREADS="4")
    live.wait_ready("/healthz")
    return live


def before_any_model_everything_says_why(server) -> None:
    ready = assert_json_error(requests.get(server.url + "/readyz", timeout=5), 503, "no model")
    assert ready["ready"] is False
    assert_json_error(requests.get(server.url + "/v2/health/ready", timeout=5), 503, "no model")
    assert_json_error(requests.get(server.url + "/v2/models/mnist/ready", timeout=5), 503)
    assert_json_error(requests.get(server.url + "/v1/models/mnist", timeout=5), 503, "no model")
    for path, body in (("/predict", {"instances": [ZERO]}), ("/v1/models/mnist:predict", {"instances": [ZERO]}),
                       ("/v2/models/mnist/infer", {"inputs": [{"name": "x", "shape": [1, 784], "datatype": "UINT8",
                                                               "data": [0] * 784}]})):
        assert_json_error(requests.post(server.url + path, json=body, timeout=5), 503, "no model")
    assert_json_error(requests.get(server.url + "/samples", timeout=5), 503, "mnist.npz")
    assert_json_error(requests.get(server.url + "/samples/test/1.png", timeout=5), 503, "mnist.npz")
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    status = requests.get(server.url + "/models", timeout=5).json()
    assert status == {"served_version": None, "pinned": None, "backend": "onnx", "versions": [], "failed": [],
                      "metadata": None}


def first_model_and_dataset_are_picked_up(server, empty_home: Path, trained_home: Path) -> None:
    (empty_home / "datasets").mkdir()
    shutil.copy(trained_home / "datasets" / "mnist.npz", empty_home / "datasets" / "mnist.npz")
    assert publish_copy(empty_home, trained_home / "mnist" / "1") == 1
    eventually(lambda: every_worker(server.url, served(1)), "both workers to serve version 1")
    assert requests.get(server.url + "/readyz", timeout=5).json() == {"ready": True, "model_version": 1}
    assert requests.get(server.url + "/samples?limit=2", timeout=30).json()["model_version"] == 1


def a_broken_version_is_reported_and_the_old_one_keeps_serving(server, empty_home, trained_home) -> None:
    assert publish_copy(empty_home, trained_home / "mnist" / "1", onnx=b"this is not an ONNX model") == 2
    eventually(lambda: every_worker(server.url, lambda s: [f["version"] for f in s["failed"]] == [2]),
               "version 2's failure in /models")
    status = requests.get(server.url + "/models", timeout=5).json()
    assert status["served_version"] == 1 and "ONNX" in status["failed"][0]["error"].upper()
    answer = requests.post(server.url + "/predict", json={"instances": [ZERO]}, timeout=5).json()
    assert answer["model_version"] == 1
    tf_status = requests.get(server.url + "/v1/models/mnist/versions/2", timeout=5).json()
    assert tf_status["model_version_status"][0]["state"] == "END"
    assert_json_error(requests.post(server.url + "/v1/models/mnist/versions/2:predict",
                                    json={"instances": [ZERO]}, timeout=5), 503, "failed to load")
    time.sleep(2.5)  # five more polls: the broken version must not be tried again on each
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert f'mnist_model_load_failures_total{{version="2"}} {float(WORKERS)}' in metrics, metrics


def hot_reload_under_load_fails_no_request(server, empty_home, trained_home) -> None:
    outcomes: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                response = session.post(server.url + "/predict", json={"instances": [ZERO] * 8}, timeout=10)
                version = response.json().get("model_version") if response.status_code == 200 else None
                outcomes.append((response.status_code, version))
            except requests.RequestException as error:
                outcomes.append((0, repr(error)))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.5)
        assert publish_copy(empty_home, trained_home / "mnist" / "1") == 3
        eventually(lambda: every_worker(server.url, served(3)), "both workers to serve version 3")
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failures = [outcome for outcome in outcomes if outcome[0] != 200]
    assert not failures, f"{len(failures)} of {len(outcomes)} requests failed during the reload: {failures[:5]}"
    versions = [version for _status, version in outcomes]
    assert versions[0] == 1 and versions[-1] == 3 and set(versions) == {1, 3}
    assert len(outcomes) > 20
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert f"mnist_model_reloads_total {float(WORKERS)}" in metrics


def rollback_switches_to_the_now_newest_loadable_version(server, empty_home) -> None:
    assert ModelStore(empty_home / "mnist").rollback() == 2  # 3 retired; 2 is the broken one
    eventually(lambda: every_worker(server.url, served(1)), "both workers back on version 1")
    status = requests.get(server.url + "/models", timeout=5).json()
    assert [v["version"] for v in status["versions"]] == [1, 2] and status["failed"][0]["version"] == 2
    assert_json_error(requests.get(server.url + "/v1/models/mnist/versions/3", timeout=5), 404)


def no_500_during_the_life_cycle_above(server) -> None:
    metrics = requests.get(server.url + "/metrics", timeout=5).text
    assert 'status="500"' not in metrics
    assert "Traceback" not in server.log()


def test_a_models_life_cycle_under_one_running_server(server, empty_home: Path, trained_home: Path) -> None:
    """The steps share one server and one store, each starting from where the last one left it: one test,
    so that no selection (-k, --lf, a random order) can run a step without the ones before it."""
    before_any_model_everything_says_why(server)
    first_model_and_dataset_are_picked_up(server, empty_home, trained_home)
    a_broken_version_is_reported_and_the_old_one_keeps_serving(server, empty_home, trained_home)
    hot_reload_under_load_fails_no_request(server, empty_home, trained_home)
    rollback_switches_to_the_now_newest_loadable_version(server, empty_home)
    no_500_during_the_life_cycle_above(server)


def test_pinned_version_waits_for_it_and_ignores_newer_ones_then_drains_on_sigterm(start_server,
                                                                                   home_copy: Path) -> None:
    source = home_copy / "mnist" / "1"
    live = start_server(home_copy, wait=False, MODEL_VERSION="2", WEB_CONCURRENCY="1")
    live.wait_ready("/healthz")
    assert_json_error(requests.get(live.url + "/readyz", timeout=5), 503, "MODEL_VERSION=2")
    assert publish_copy(home_copy, source) == 2
    live.wait_ready()
    assert publish_copy(home_copy, source) == 3
    time.sleep(1.5)
    status = requests.get(live.url + "/models", timeout=5).json()
    assert status["served_version"] == 2 and status["pinned"] == 2
    answer = requests.post(live.url + "/predict", json={"instances": [ZERO]}, timeout=5).json()
    assert answer["model_version"] == 2
    # An explicit version is still served on request (loaded on demand), the pin only sets the default.
    for version in (3, 1):
        on_demand = requests.post(f"{live.url}/v1/models/mnist/versions/{version}:predict",
                                  json={"instances": [ZERO]}, timeout=10)
        assert on_demand.status_code == 200, on_demand.text
    assert requests.get(live.url + "/v1/models/mnist/versions/3", timeout=10).json()[
        "model_version_status"][0]["state"] == "AVAILABLE"
    assert_drains_on_sigterm(live)


def assert_drains_on_sigterm(live) -> None:
    """A request in flight when SIGTERM arrives still gets its answer; then gunicorn exits cleanly."""
    big = {"instances": [ZERO] * 1024}  # about half a second of parsing and inference: still running below
    answers: list[int] = []
    slow = threading.Thread(target=lambda: answers.append(
        requests.post(live.url + "/predict", json=big, timeout=30).status_code))
    slow.start()
    time.sleep(0.2)  # let it reach the worker
    live.process.send_signal(signal.SIGTERM)
    slow.join()
    assert answers == [200]
    assert live.process.wait(30) == 0
    log = live.log()
    # The answer was logged after the signal: the request really was in flight when it came.
    assert log.index("Handling signal: term") < log.rindex("server.requests: POST /predict 200 "), log[-2000:]
