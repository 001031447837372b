"""The model store on a real S3 server (`rclone serve s3`): publish, claims, a killed publisher, rollback,
retention, the server's verified sync, hot reload, an S3 outage under load, a corrupted object and
wrong credentials. The store-level tests use small stand-in files; the server tests a real trained model."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import ROOT, assert_json_error, run_trainer, standin_loader
from helpers import eventually, every_worker, served
from rclone_s3 import RcloneS3

from server.model_manager import ModelManager
from server.store_sync import StoreSync
from shared.config import Config
from shared.model_store import KERAS_FILE, METADATA_FILE, ONNX_FILE, ModelStore
from shared.store_s3 import MARKER, S3ModelStore

ZERO = [[0] * 28] * 28


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RcloneS3]:
    root = tmp_path_factory.mktemp("s3")
    server = RcloneS3(root / "data", root / "rclone.log")
    server.start()
    saved = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())  # the standard AWS settings, as a deployment would set them
    yield server
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def stand_in(folder: Path, token: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ONNX_FILE).write_text(f"onnx {token}")
    (folder / KERAS_FILE).write_text(f"keras {token}")
    return folder


def stamp_with(metadata: dict) -> Callable[[Path, int], None]:
    def stamp(folder: Path, version: int) -> None:
        (folder / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}))
    return stamp


def publish(store: S3ModelStore, source: Path, token: str = "t") -> int:
    with store.staging() as staged:
        for name in (ONNX_FILE, KERAS_FILE):
            (staged / name).write_bytes((source / name).read_bytes())
        return store.publish(staged, stamp_with({"token": token}))


# -- the store -----------------------------------------------------------------------------------

def test_concurrent_publishers_get_distinct_numbers_each_complete(s3: RcloneS3, tmp_path: Path) -> None:
    url = s3.url("race")

    def one(index: int) -> int:
        return publish(S3ModelStore(url, "mnist"), stand_in(tmp_path / str(index), str(index)), str(index))

    with ThreadPoolExecutor(4) as pool:
        numbers = list(pool.map(one, range(4)))
    store = S3ModelStore(url, "mnist")
    assert sorted(numbers) == [1, 2, 3, 4] and store.versions() == [1, 2, 3, 4]
    for version in numbers:  # every marker describes the files actually stored under its number
        cache = tmp_path / "check" / str(version)
        cache.mkdir(parents=True)
        for name, expected in store.manifest(version)["files"].items():
            store.download(f"{version}/{name}", cache / name)
            assert (cache / name).stat().st_size == expected["size"]
        assert store.metadata(version)["version"] == version


def test_a_claim_overwritten_soon_after_goes_to_one_publisher_only(s3: RcloneS3, monkeypatch) -> None:
    """rclone ignores If-None-Match: a publisher that listed before another's claim overwrites it a moment later.
    Read back at once, both claims looked owned (a CI run published 1, 2, 2, 3); after the settle, one moves on."""
    url = s3.url("late-claim")
    first, late = S3ModelStore(url, "mnist"), S3ModelStore(url, "mnist")
    before_any_claim = late.listing()
    monkeypatch.setattr(late, "listing", lambda: before_any_claim)  # it will pick the number `first` takes
    claimed: dict[str, int] = {}
    racing = threading.Thread(target=lambda: claimed.update(first=first._claim("first")))
    racing.start()
    time.sleep(0.3)  # `first` has put and (before the fix) read back its claim; well inside the settle
    claimed["late"] = late._claim("late")
    racing.join(30)
    assert claimed["first"] != claimed["late"], claimed


def test_the_store_ignores_if_none_match_so_the_claim_is_read_back(s3: RcloneS3) -> None:
    """Why the claim does not rely on the conditional put alone (docs/s3.md): this server accepts a
    second `If-None-Match: *` put of an existing key. If a later rclone refuses it, this test says so."""
    store = S3ModelStore(s3.url("conditional"), "mnist")
    assert store._put("probe", b"1", exclusive=True)
    assert store._put("probe", b"2", exclusive=True)  # AWS S3, MinIO, R2 answer 412 here


def test_a_publisher_killed_before_its_marker_is_never_a_version(s3: RcloneS3, tmp_path: Path) -> None:
    url = s3.url("killed")
    store = S3ModelStore(url, "mnist")
    assert publish(store, stand_in(tmp_path / "a", "a")) == 1
    stand_in(tmp_path / "b", "b")
    # A real process, killed after uploading its model files and before writing the marker.
    script = (
        "import json, sys, time\n"
        "from pathlib import Path\n"
        "from shared.store_s3 import MARKER, S3ModelStore\n"
        "store = S3ModelStore(sys.argv[1], 'mnist')\n"
        "put = store._put\n"
        "def stall(key, body, exclusive=False):\n"
        "    if key.endswith(MARKER):\n"
        "        print('uploaded', flush=True); time.sleep(600)\n"
        "    return put(key, body, exclusive)\n"
        "store._put = stall\n"
        "stamp = lambda folder, version: (folder / 'metadata.json').write_text(json.dumps({'version': version}))\n"
        "store.publish(Path(sys.argv[2]), stamp)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, url, str(tmp_path / "b")], cwd=ROOT,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "uploaded"
    finally:
        process.kill()
        process.wait()
    listing = store.listing()
    assert f"2/{ONNX_FILE}" in listing.keys and f"2/{MARKER}" not in listing.keys
    assert store.versions() == [1] and store.latest() == 1
    cache = ModelStore(tmp_path / "cache")
    assert StoreSync(store, cache).sync() == [1] and cache.versions() == [1]
    assert publish(store, tmp_path / "a") == 3  # the killed claim keeps number 2 from being reused
    assert store.clean_stale_staging(older_than_s=3600) == []  # too young: it might still be uploading
    assert store.clean_stale_staging(older_than_s=0) == [f"{store.base_path}/2"]
    assert not [key for key in store.listing().keys if key.startswith("2/")]


def test_rollback_and_retention_on_the_bucket(s3: RcloneS3, tmp_path: Path) -> None:
    store = S3ModelStore(s3.url("rollback"), "mnist")
    source = stand_in(tmp_path / "src", "x")
    assert [publish(store, source) for _ in range(4)] == [1, 2, 3, 4]
    assert store.rollback() == 3 and store.versions() == [1, 2, 3] and store.listing().retired() == [4]
    assert publish(store, source) == 5  # a retired number is never handed out again
    assert store.prune(2) == [1, 2] and store.versions() == [3, 5]
    assert store.rollback() == 3
    assert store.prune_retired(1) == [4] and store.listing().retired() == [5]
    assert publish(store, source) == 6


def test_manage_status_rollback_and_wrong_credentials_name_the_setting(s3: RcloneS3, tmp_path: Path) -> None:
    url = s3.url("manage")
    store = S3ModelStore(url, "mnist")
    for _ in range(2):
        publish(store, stand_in(tmp_path / "src", "m"))
    env = {**os.environ, "MODEL_STORE": url, "MNIST_HOME": str(tmp_path / "home")}

    def manage(command: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "trainer.manage", command], cwd=ROOT, env={**env, **extra},
                              capture_output=True, text=True, timeout=60)

    status = manage("status")
    assert status.returncode == 0 and "      2 " in status.stdout, status.stdout + status.stderr
    rollback = manage("rollback")
    assert rollback.returncode == 0 and "version 1 is current" in rollback.stdout, rollback.stderr
    assert store.versions() == [1]
    refused = manage("status", AWS_SECRET_ACCESS_KEY="wrong")
    assert refused.returncode == 1 and "AWS_SECRET_ACCESS_KEY" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


def test_sync_refuses_a_corrupted_object_and_follows_rollback(s3: RcloneS3, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    store = S3ModelStore(s3.url("sync"), "mnist")
    source = stand_in(tmp_path / "src", "s")
    cache = ModelStore(tmp_path / "cache")
    sync = StoreSync(store, cache)
    assert publish(store, source) == 1 and sync.sync() == [1]
    assert (cache.version_dir(1) / ONNX_FILE).read_text() == "onnx s"
    assert publish(store, source) == 2
    store.client.put_object(Bucket=store.bucket, Key=f"{store.root}2/{ONNX_FILE}", Body=b"onnx tampered")
    with caplog.at_level(logging.ERROR):
        assert sync.sync() == []
    assert cache.versions() == [1]
    assert any("model version 2 refused: model.onnx does not match its marker" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        assert sync.sync() == []  # not fetched again until its marker changes
    assert not caplog.records
    assert publish(store, source) == 3 and sync.sync() == [3] and cache.versions() == [1, 3]
    store.rollback()
    sync.sync()
    assert cache.versions() == [1]  # version 2 stays refused, 3 left the bucket


def test_before_a_first_load_the_reason_names_the_bucket_problem(s3: RcloneS3, tmp_path: Path) -> None:
    url = s3.url("first")
    manager = ModelManager(Config(home=tmp_path, model_store=url), loader=standin_loader)
    manager.poll()
    assert manager.not_ready_reason() == f"no model in {url}/mnist yet; waiting for the trainer to publish one"
    store = S3ModelStore(url, "mnist")
    assert publish(store, stand_in(tmp_path / "src", "f")) == 1
    store.client.put_object(Bucket=store.bucket, Key=f"{store.root}1/{KERAS_FILE}", Body=b"tampered")
    manager.poll()
    assert "refused version 1: model.keras does not match its marker" in manager.not_ready_reason()
    s3.stop()
    try:
        manager.poll()
        assert manager.not_ready_reason().startswith("no model loaded yet and the model store is unreachable: ")
        assert "AWS_ENDPOINT_URL" in manager.not_ready_reason()
    finally:
        s3.start()
    assert publish(store, tmp_path / "src") == 2
    manager.poll()
    assert manager.current is not None and manager.current.version == 2


# -- the server ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bucket_url(s3: RcloneS3, mnist_http, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Version 1, published into the bucket by the real trainer."""
    url = s3.url("served")
    result = run_trainer(tmp_path_factory.mktemp("trainer-home"), mnist_http.url(), MODEL_STORE=url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"published version 1 to {url}/mnist/1" in result.stdout
    return url


@pytest.fixture(scope="module")
def model_source(bucket_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    store = S3ModelStore(bucket_url, "mnist")
    for name in (ONNX_FILE, KERAS_FILE):
        store.download(f"1/{name}", folder / name)
    return folder


@pytest.fixture(scope="module")
def server(bucket_url: str, start_module_server, tmp_path_factory: pytest.TempPathFactory):
    """One server for the module's server tests (a start syncs and loads a real model). They publish, roll back
    and corrupt versions in the same bucket, so each reads the versions it expects relative to the store's
    newest when it starts: any order passes."""
    return start_module_server(tmp_path_factory.mktemp("cache"), MODEL_STORE=bucket_url, WEB_CONCURRENCY="2")


def served_version(server) -> int:
    """The version every worker serves now (the module's tests leave the server settled)."""
    version = requests.get(server.url + "/models", timeout=5).json()["served_version"]
    assert every_worker(server.url, served(version), 6), "the workers serve different versions"
    return version


def test_the_server_serves_the_trainers_version_from_a_local_verified_copy(server, bucket_url: str) -> None:
    serving = served_version(server)  # 1, unless another test published a newer version first
    assert requests.get(server.url + "/readyz", timeout=5).json() == {"ready": True, "model_version": serving}
    answer = requests.post(server.url + "/predict", json={"instances": [ZERO]}, timeout=5)
    assert answer.status_code == 200 and answer.json()["model_version"] == serving
    assert f"fetched model version 1 from {bucket_url}/mnist" in server.log()


def test_hot_reload_rollback_and_a_corrupted_object(server, bucket_url: str, model_source: Path) -> None:
    store = S3ModelStore(bucket_url, "mnist")
    before = served_version(server)
    new = publish(store, model_source)
    eventually(lambda: every_worker(server.url, served(new), 6), f"version {new} served", timeout=60)
    store.rollback()
    eventually(lambda: every_worker(server.url, served(before), 6), f"back on version {before} after the rollback",
               timeout=60)
    assert_json_error(requests.get(server.url + f"/v1/models/mnist/versions/{new}", timeout=5), 404)
    corrupted = publish(store, model_source)
    store.client.put_object(Bucket=store.bucket, Key=f"{store.root}{corrupted}/{ONNX_FILE}", Body=b"not a model")
    eventually(lambda: f"model version {corrupted} refused: model.onnx does not match its marker" in server.log(),
               "the refusal in the log", timeout=60)
    assert every_worker(server.url, served(before), 6)


def test_an_s3_outage_under_load_fails_no_request_and_new_versions_follow(server, s3: RcloneS3,
                                                                          bucket_url: str, model_source: Path) -> None:
    outcomes: list[int] = []
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            try:
                outcomes.append(session.post(server.url + "/predict", json={"instances": [ZERO] * 4},
                                             timeout=10).status_code)
            except requests.RequestException:
                outcomes.append(0)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        s3.stop()
        eventually(lambda: "model store unreachable; serving what is loaded" in server.log(), "the outage logged",
                   timeout=60)
        time.sleep(2)
        s3.start()
        new = publish(S3ModelStore(bucket_url, "mnist"), model_source)
        eventually(lambda: every_worker(server.url, served(new), 6), f"version {new} served after the outage",
                   timeout=60)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(outcomes) > 20 and set(outcomes) == {200}, f"{len(outcomes)} requests: {set(outcomes)}"


def test_wrong_credentials_make_readyz_name_the_setting(s3: RcloneS3, bucket_url: str, start_server,
                                                        tmp_path: Path) -> None:
    live = start_server(tmp_path, wait=False, MODEL_STORE=bucket_url, AWS_SECRET_ACCESS_KEY="wrong",
                        WEB_CONCURRENCY="1")
    live.wait_ready("/healthz")
    assert_json_error(requests.get(live.url + "/readyz", timeout=5), 503, "unreachable", "AWS_SECRET_ACCESS_KEY")
    assert "Traceback" not in live.log()
