"""Faults in the trainer: SIGKILL at every stage of a publish, and a full disk.

The store's promise (shared/model_store.py) is that a numbered version only ever appears
through one rename of a complete staging folder. These tests break the real trainer where
it hurts and check that promise from the outside: no half-written numbered version, the
running server keeps answering with the previous version, and the next run publishes.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import SHARED_MNIST
from helpers import eventually, predicted_version
from trainer_process import TrainerProcess

from shared.config import KERAS_MNIST_SHA256
from shared.model_store import ModelStore

# Fault runs only need a model that passes the gate, not a good one: the cheapest real run.
QUICK = {"EPOCHS": "1", "TRAIN_SUBSET": "1000", "MIN_ACCURACY": "0.1"}
# A real SIGKILL at the one instant no file watcher can catch reliably: every file staged
# and fsynced, the rename that publishes them not yet done. Test-only instrumentation of
# os.rename inside the real trainer process; no hook in the product code.
KILL_BEFORE_RENAME = """
import os, signal, runpy
from shared import model_store
real_rename = os.rename
def rename(src, dst, *args, **kwargs):
    if os.path.basename(str(src)).startswith(model_store.STAGING_PREFIX):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_rename(src, dst, *args, **kwargs)
os.rename = rename
runpy.run_module("trainer", run_name="__main__")
"""


class TrickleServer:
    """Serves the real mnist.npz on 127.0.0.1 a little at a time, so a download lasts a while."""

    CHUNK = 16 * 1024
    PAUSE_S = 0.05
    GIVE_UP_S = 60  # bound: the handler never outlives the test by long

    def __init__(self) -> None:
        data = SHARED_MNIST.read_bytes()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                deadline = time.monotonic() + outer.GIVE_UP_S
                try:
                    for start in range(0, len(data), outer.CHUNK):
                        if time.monotonic() > deadline:
                            return
                        self.wfile.write(data[start: start + outer.CHUNK])
                        time.sleep(outer.PAUSE_S)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the trainer was killed mid-download: exactly what the test wants

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist.npz"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def trickle() -> Iterator[TrickleServer]:
    server = TrickleServer()
    yield server
    server.close()


def quick_trainer(home: Path, url: str, driver: str | None = None, **env: str) -> TrainerProcess:
    """A real trainer process on a small slice, its output collected while it runs."""
    return TrainerProcess(home, url, driver, **{**QUICK, **env})


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*")) if path.is_file()
    }


def staged_file(store: ModelStore, name: str) -> Callable[[], bool]:
    return lambda: any((staging / name).exists() for staging in store.base_path.glob(".staging-*"))


def download_started(home: Path) -> Callable[[], bool]:
    return lambda: any(
        path.is_file() and path.stat().st_size > 0 for path in (home / "datasets").glob(".download-*/*")
    )


def test_sigkill_at_every_stage_of_a_publish_loses_nothing(home_copy, mnist_http, trickle, start_server):
    store = ModelStore(home_copy / "mnist")
    version_one = tree_digest(store.version_dir(1))
    cache = home_copy / "datasets" / "mnist.npz"

    def cached_dataset() -> str | None:
        return hashlib.sha256(cache.read_bytes()).hexdigest() if cache.exists() else None

    dataset_before = cached_dataset()
    server = start_server(home_copy)
    assert predicted_version(server.url) == 1

    stages: list[tuple[str, Callable[[], TrainerProcess], Callable[[TrainerProcess], Callable[[], bool]] | None]] = [
        # The operator points the trainer at another file: the cache no longer matches,
        # so it downloads again, slowly, from the trickling server.
        ("mid-download", lambda: quick_trainer(home_copy, trickle.url, MNIST_SHA256=KERAS_MNIST_SHA256),
         lambda run: download_started(home_copy)),
        # Many epochs so that the kill after the first one lands inside model.fit.
        ("mid-training", lambda: quick_trainer(home_copy, mnist_http.url(), EPOCHS="50"),
         lambda run: lambda: any(line.startswith("epoch 1/50") for line in run.lines)),
        # The Keras file appears first; the ONNX export and its check follow, still in staging.
        ("mid-save", lambda: quick_trainer(home_copy, mnist_http.url()),
         lambda run: staged_file(store, "model.keras")),
        ("between save and rename", lambda: quick_trainer(home_copy, mnist_http.url(), driver=KILL_BEFORE_RENAME),
         None),
    ]
    for stage, start, killed_when in stages:
        run = start()
        if killed_when is None:
            code = run.finish()  # it kills itself at the rename
        else:
            run.wait_for(killed_when(run), stage)
            code = run.kill()
        assert code == -signal.SIGKILL, f"{stage}: trainer ended with {code}, not SIGKILL:\n{run.output()}"
        assert store.versions() == [1], f"{stage}: a numbered version appeared: {store.versions()}"
        assert tree_digest(store.version_dir(1)) == version_one, f"{stage}: version 1 changed"
        leftovers = [p.name for p in store.base_path.iterdir() if p.name != "1"]
        assert all(name.startswith(".staging-") for name in leftovers), f"{stage}: {leftovers}"
        # A mismatching cache is taken out of service on purpose (shared/dataset.py), but a
        # partial download must never sit where the trainer or the server would read it.
        assert cached_dataset() in (None, dataset_before), f"{stage}: a partial dataset is in the cache"
        assert predicted_version(server.url) == 1, f"{stage}: the server stopped serving version 1"

    # Every kind of debris is now on the volume; the next ordinary run must not mind it.
    finished = quick_trainer(home_copy, mnist_http.url())
    assert finished.finish() == 0, finished.output()
    assert store.versions() == [1, 2]
    assert cached_dataset() == dataset_before
    eventually(lambda: predicted_version(server.url) == 2, "hot reload of version 2", timeout=60, interval=0.5)


@pytest.fixture
def small_store_disk(home_copy: Path) -> Iterator[Path]:
    """Moves the model store onto a tmpfs with room for version 1 and about 1 MB more."""
    store = home_copy / "mnist"
    used = sum(path.stat().st_size for path in store.rglob("*") if path.is_file())
    saved = home_copy / "mnist-saved"
    store.rename(saved)
    store.mkdir()
    size_kb = used // 1024 + 1024
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(store)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        shutil.copytree(saved, store, dirs_exist_ok=True)
        yield store
    finally:
        subprocess.run(["umount", "-l", str(store)], check=False)


def test_disk_full_while_publishing_is_a_clear_error_and_leaves_nothing(home_copy, small_store_disk, mnist_http):
    store = ModelStore(small_store_disk)
    version_one = tree_digest(store.version_dir(1))
    run = quick_trainer(home_copy, mnist_http.url())
    code = run.finish()
    output = run.output()
    assert code == 1, output
    assert "Traceback" not in output, output
    assert "not published" in output and "No space left on device" in output, output
    assert store.versions() == [1]
    assert tree_digest(store.version_dir(1)) == version_one
    assert sorted(p.name for p in small_store_disk.iterdir()) == ["1"], "temporary files were left behind"
    assert not list((home_copy / "datasets").glob(".download-*"))
