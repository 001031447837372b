"""Helpers every test layer shares (tests/ is on sys.path through tests/conftest.py: `from helpers import ...`).

Kept here once so that no test module carries its own copy: polling, request bodies, MNIST slices.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import orjson
import pytest
import requests
from PIL import Image

from shared.dataset import Mnist
from shared.model_store import KERAS_FILE, METADATA_FILE, ONNX_FILE, ModelStore
from shared.preprocess import mnist_to_png

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent  # the repository

V2_HEADER_LENGTH = "Inference-Header-Content-Length"


def eventually(condition: Callable[[], T], what: str = "condition", timeout: float = 30,
               interval: float = 0.1, detail: Callable[[], str] | None = None) -> float:
    """Poll `condition` until it returns something true; the seconds it took. An AssertionError naming `what`
    (and `detail()`, e.g. a process's log) after `timeout` s. Exceptions of `condition` propagate: catch expected
    ones inside it, raise from it to stop waiting early (a process that exited will never become ready)."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        if elapsed >= timeout:
            raise AssertionError(f"no {what} after {timeout} s" + (f":\n{detail()}" if detail else ""))
        time.sleep(interval)
    return time.monotonic() - started


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    """`array` as the bytes of a .npy file (what `Content-Type: application/x-npy` bodies carry)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def encoded(image: Image.Image, image_format: str, **options: Any) -> bytes:
    """`image` saved as `image_format` ("PNG", "JPEG", ...) with Pillow's `options`, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_b64(image: np.ndarray, scale: int = 3) -> str:
    """A 28x28 uint8 digit as base64 PNG text, upscaled `scale` times (what JSON bodies carry as `b64`)."""
    return base64.b64encode(mnist_to_png(image, scale)).decode()


def v2_binary(images: np.ndarray, binary_out: bool = True, request_id: str = "b1") -> tuple[bytes, dict[str, str]]:
    """An Open Inference Protocol v2 binary-tensor request for uint8 `images`: (body, headers)."""
    header = orjson.dumps({"id": request_id,
                           "inputs": [{"name": "pixels", "shape": list(images.shape), "datatype": "UINT8",
                                       "parameters": {"binary_data_size": images.nbytes}}],
                           "parameters": {"binary_data_output": binary_out}})
    return header + images.tobytes(), {V2_HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}


def v2_binary_tensor(tensor: dict, raw: bytes) -> dict:
    """A v2 binary body from a hand-written tensor header and raw bytes, as `requests` keyword arguments
    (for hostile bodies whose header and data need not agree)."""
    header = orjson.dumps({"inputs": [tensor]})
    return {"data": header + raw, "headers": {V2_HEADER_LENGTH: str(len(header))}}


def tiny_mnist(mnist_npz: Path, images: int) -> Mnist:
    """The first `images` rows of each split of the real MNIST: enough to fit a model in seconds."""
    with np.load(mnist_npz) as archive:
        return Mnist(*(archive[key][:images] for key in ("x_train", "y_train", "x_test", "y_test")))


def first_test_digits(mnist_npz: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` test digits and their labels."""
    with np.load(mnist_npz) as archive:
        return archive["x_test"][:count], archive["y_test"][:count]


# -- a model store and the servers that watch it ---------------------------------------------------------

def publish_copy(home: Path, source: Path | None = None, onnx: bytes | None = None, **metadata: object) -> int:
    """Publish a copy of version folder `source` (default: version 1 of `home`'s store) the way the trainer
    does, and return its new number. `onnx` replaces model.onnx (a broken or odd model); `metadata` overrides
    fields of the copied metadata.json."""
    store = ModelStore(home / "mnist")
    source = source or store.version_dir(1)
    with store.staging() as staged:
        for item in source.iterdir():
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staged / item.name)
        if onnx is not None:
            (staged / ONNX_FILE).write_bytes(onnx)
        copied = orjson.loads((staged / METADATA_FILE).read_bytes())

        def stamp(folder: Path, version: int) -> None:
            (folder / METADATA_FILE).write_bytes(orjson.dumps({**copied, **metadata, "version": version}))

        return store.publish(staged, stamp)


def every_worker(url: str, check: Callable[[dict], bool], tries: int = 12) -> bool:
    """`check` holds for /models in `tries` requests in a row: they spread over gunicorn's workers, each of
    which has its own model manager."""
    return all(check(requests.get(url + "/models", timeout=10).json()) for _ in range(tries))


def served(version: int | None) -> Callable[[dict], bool]:
    """A check for `every_worker`: /models says `version` is the one served."""
    return lambda status: status["served_version"] == version


def predicted_version(url: str) -> int:
    """The version that answers a real prediction (a blank digit is a valid instance)."""
    response = requests.post(url + "/predict", json={"instances": [[[0] * 28] * 28]}, timeout=30)
    assert response.status_code == 200, response.text[:300]
    return response.json()["model_version"]


def write_stand_in_files(folder: Path, token: str) -> None:
    """A version's model files as small text naming `token` (the store's tests need no real model)."""
    (folder / KERAS_FILE).write_text(f"keras {token}")
    (folder / ONNX_FILE).write_text(f"onnx {token}")


def stamp_metadata(token: str) -> Callable[[Path, int], None]:
    """A publish stamp writing metadata.json with the version's number and `token`."""
    def stamp(folder: Path, version: int) -> None:
        (folder / METADATA_FILE).write_text(orjson.dumps({"version": version, "token": token}).decode())

    return stamp


def publish_stand_in(store: ModelStore, token: str) -> int:
    """Publish a stand-in version (files and metadata naming `token`); its number."""
    with store.staging() as staged:
        write_stand_in_files(staged, token)
        return store.publish(staged, stamp_metadata(token))


def assert_complete(store: ModelStore, version: int, token: str) -> None:
    """The folder holds every file, all from the same publisher, and records its own number."""
    folder = store.version_dir(version)
    assert sorted(p.name for p in folder.iterdir()) == sorted([KERAS_FILE, ONNX_FILE, METADATA_FILE])
    assert (folder / KERAS_FILE).read_text() == f"keras {token}"
    assert (folder / ONNX_FILE).read_text() == f"onnx {token}"
    assert store.metadata(version) == {"version": version, "token": token}


def hidden_entries(store: ModelStore) -> list[str]:
    """What the store's folder holds besides numbered versions (staging, retired folders)."""
    return sorted(p.name for p in store.base_path.iterdir() if not p.name.isdigit())


# -- steady load while a test changes the system under it ---------------------------------------------------

class CallFailed(Exception):
    """Raised by a CallStream's call for an answer that counts as a failure; its message is what is kept."""


class CallStream(Generic[T]):
    """Calls `call(n)` for n = 0, 1, ... from a background thread, `pause` s apart, until `finish()` (or `limit`
    calls): what each returns goes to `results`; one that raises CallFailed goes to `failures`, and the stream
    goes on. Anything else a call raises ends the stream (`wait_for` then says so)."""

    def __init__(self, call: Callable[[int], T], pause: float, limit: int = 20_000) -> None:
        self.results: list[T] = []
        self.failures: list[str] = []
        self._call, self._pause, self._limit = call, pause, limit
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for count in range(self._limit):
            if self._stop.is_set():
                return
            try:
                self.results.append(self._call(count))
            except CallFailed as failure:
                self.failures.append(str(failure))
            self._stop.wait(self._pause)

    def wait_for(self, more: int, timeout: float = 60) -> None:
        """Until `more` further results arrived (or a call failed); the stream goes on meanwhile."""
        target = len(self.results) + more

        def arrived() -> bool:
            if len(self.results) >= target or self.failures:
                return True
            assert self.thread.is_alive(), f"the stream stopped after {len(self.results)} answers"
            return False

        eventually(arrived, f"{more} more answers from the stream", timeout, interval=0.05,
                   detail=lambda: f"{len(self.results)} of {target} so far")

    def finish(self, timeout: float = 60) -> None:
        self._stop.set()
        self.thread.join(timeout)



class BackgroundLoop:
    """An asyncio event loop on its own thread, for in-process tests of an asyncio server (the gRPC server,
    server/transports/grpc_server.py) called from the test's thread with a blocking client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coroutine` on the loop; its result here, its exception raised here."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

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


# The fraction of the first test digits a client must get right through a trained model (a few steps on a slice).
MIN_ACCURACY = 0.8


def run_client(mode: str, address: str, digits_path: Path, token: str) -> dict[str, Any]:
    """One client of tests/integration/grpc_clients.py (triton|kserve|health), in its own process, against a gRPC
    address: what each call answered, by name."""
    done = subprocess.run([sys.executable, "tests/integration/grpc_clients.py", mode, address,
                           str(digits_path), token], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return {line["name"]: line["value"] for line in map(json.loads, done.stdout.splitlines())}


DOCKERFILE = (ROOT / "Dockerfile").read_text()  # read as text by the unit and deploy tests


def stage(name: str) -> str:
    """The text of one Dockerfile stage."""
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, flags=re.MULTILINE | re.DOTALL)
    assert match, f"no stage {name} in the Dockerfile"
    return match.group(1)
