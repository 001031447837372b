"""Fixtures shared by every test: real MNIST over loopback HTTP, a real trained model store,
and a real gunicorn server on 127.0.0.1.

MNIST comes the way the trainer gets it: the file named by MNIST_NPZ if set, else MNIST_URL (the Keras URL by
default) downloaded once, SHA-256 checked, into the user's cache folder. Tests then serve it from a loopback HTTP
server, so the project's real download code is exercised without the internet.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from helpers import ROOT, eventually

from shared import dataset
from shared.config import KERAS_MNIST_SHA256, KERAS_MNIST_URL

# Every known good mnist.npz: the Keras file, and a mirror's re-saved copy (other bytes, the same arrays).
MIRROR_MNIST_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
KNOWN_MNIST_SHA256 = frozenset({KERAS_MNIST_SHA256, MIRROR_MNIST_SHA256})


def user_cache(environ: Mapping[str, str] = os.environ) -> Path:
    """Where the suite keeps what it downloads: $XDG_CACHE_HOME (or ~/.cache)/mnist-stack."""
    return Path(environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-stack"


def resolve_mnist(environ: Mapping[str, str] = os.environ) -> tuple[Path, str]:
    """The suite's mnist.npz and its SHA-256: MNIST_NPZ if set (any known good digest), else MNIST_URL (default
    the Keras URL) fetched into the user's cache and checked against MNIST_SHA256 (default the Keras digest)."""
    if local := environ.get("MNIST_NPZ"):
        path = Path(local).expanduser().resolve()
        if not path.is_file():
            raise pytest.UsageError(f"MNIST_NPZ={local}: no such file")
        digest = dataset.sha256_of(path)
        if digest not in KNOWN_MNIST_SHA256:
            raise pytest.UsageError(f"MNIST_NPZ={local}: SHA-256 {digest} is none of the known good "
                                    f"{', '.join(sorted(KNOWN_MNIST_SHA256))}")
        return path, digest
    cached = user_cache(environ) / "mnist.npz"
    expected = environ.get("MNIST_SHA256")
    if expected is None and cached.is_file() and (digest := dataset.sha256_of(cached)) in KNOWN_MNIST_SHA256:
        return cached, digest
    expected = expected or KERAS_MNIST_SHA256
    try:
        return dataset.fetch(environ.get("MNIST_URL") or KERAS_MNIST_URL, expected, cached), expected
    except dataset.DatasetError as error:
        raise pytest.UsageError(f"the suite needs MNIST: {error}. Set MNIST_NPZ to a local mnist.npz, "
                                "or MNIST_URL (and MNIST_SHA256) to a mirror") from None


# Resolved once at import: test modules take these as constants (`from conftest import SHARED_MNIST`).
SHARED_MNIST, SHARED_MNIST_SHA256 = resolve_mnist()
# The slice the suite trains on: enough for a model well above chance in about 20 s.
TRAIN_SUBSET = 4000
QUICK_MIN_ACCURACY = 0.5


# The layer is the folder: unit/ is in-process (no trained model, no server or trainer process, milliseconds);
# integration/ runs the real trainer on a slice and real gunicorn; system/ runs Docker, compose and a browser.
# `make test-fast` runs tests/unit; the other two layers are marked `slow` here, so no module has to say so.
LAYERS = ("unit", "integration", "system")
SLOW_LAYERS = {"integration", "system"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    for item in items:
        layer = item.path.resolve().relative_to(tests).parts[0]
        if layer not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: a test belongs in one of tests/{{{','.join(LAYERS)}}}/")
        if layer in SLOW_LAYERS:
            item.add_marker(pytest.mark.slow)


class MnistHttpServer:
    """Serves the real mnist.npz (and broken variants of it) on 127.0.0.1, counting requests."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                outer.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def path(self, name: str = "mnist.npz") -> Path:
        """The file served as `name`."""
        return self.root / name

    def url(self, name: str = "mnist.npz") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def mnist_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MnistHttpServer]:
    root = tmp_path_factory.mktemp("mnist-http")
    os.symlink(SHARED_MNIST, root / "mnist.npz")
    data = SHARED_MNIST.read_bytes()
    (root / "truncated.npz").write_bytes(data[: len(data) // 2])
    (root / "corrupt.npz").write_bytes(data[:1000] + bytes(len(data) - 1000))
    server = MnistHttpServer(root)
    yield server
    server.close()


def trainer_env(home: Path, mnist_url: str, **extra: str) -> dict[str, str]:
    """Environment for a quick, real trainer run on a slice of real MNIST."""
    env = dict(os.environ)
    env.update(
        MNIST_HOME=str(home),
        MNIST_URL=mnist_url,
        MNIST_SHA256=SHARED_MNIST_SHA256,
        EPOCHS="1",
        TRAIN_SUBSET=str(TRAIN_SUBSET),
        MIN_ACCURACY=str(QUICK_MIN_ACCURACY),
    )
    env.update(extra)
    return env


def run_trainer(
    home: Path, mnist_url: str, *args: str, timeout: float = 300, **extra: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", *args],
        cwd=ROOT,
        env=trainer_env(home, mnist_url, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory, mnist_http: MnistHttpServer) -> Path:
    """A volume holding the dataset cache and version 1, written by the real trainer. Read-only for tests."""
    home = tmp_path_factory.mktemp("trained-home")
    result = run_trainer(home, mnist_http.url())
    assert result.returncode == 0, f"trainer failed:\n{result.stdout}\n{result.stderr}"
    return home


@pytest.fixture
def home_copy(trained_home: Path, tmp_path: Path) -> Path:
    """A private, writable copy of `trained_home` for tests that publish, retire or break versions."""
    home = tmp_path / "home"
    shutil.copytree(trained_home, home)
    return home


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real gunicorn process serving `server.wsgi:app` on 127.0.0.1."""

    def __init__(self, home: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.update(MNIST_HOME=str(home), PORT=str(self.port), BIND_HOST="127.0.0.1", RELOAD_INTERVAL="0.5")
        full_env.update(env)
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process it captures
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi:app"],
            cwd=ROOT,
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, path: str = "/readyz", timeout: float = 60) -> None:
        """Until `path` answers 200; fails at once with the log if gunicorn exits, or after `timeout` s."""
        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                return requests.get(self.url + path, timeout=2).status_code == 200
            except (requests.ConnectionError, requests.Timeout):
                return False  # not listening yet, or accepted by the kernel while the worker still loads

        eventually(answers, f"200 from {self.url}{path}", timeout, interval=0.2, detail=self.log)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def assert_json_error(response: Any, status: int, *fragments: str) -> dict:
    """The server's error contract: the given 4xx/5xx status, JSON `{"error": "..."}` naming what was wrong.
    `response` is a `requests` response or a Flask test client's."""
    text = response.get_data(as_text=True) if hasattr(response, "get_data") else response.text
    assert response.status_code == status, f"{response.status_code} != {status}: {text[:300]}"
    assert response.headers["Content-Type"].startswith("application/json"), response.headers["Content-Type"]
    body = json.loads(text)
    assert isinstance(body.get("error"), str) and body["error"], body
    for fragment in fragments:
        assert fragment.lower() in body["error"].lower(), f"{fragment!r} not in {body['error']!r}"
    return body


def _server_factory(log_dir: Path) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(home: Path, wait: bool = True, **env: str) -> LiveServer:
        server = LiveServer(home, log_dir / f"gunicorn-{len(servers)}.log", **env)
        servers.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Factory: `start_server(home, wait=True, **env)` starts gunicorn; all are stopped afterwards."""
    yield from _server_factory(tmp_path)


@pytest.fixture(scope="module")
def start_module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LiveServer]]:
    """Like `start_server`, but the servers live until the test module ends (one start serves many tests)."""
    yield from _server_factory(tmp_path_factory.mktemp("gunicorn"))


# -- the in-process layer: the app with a stand-in model, no training, no processes -------------------

class StandInModel:
    """Answers label = (number of full-white pixels) % 10 with probability 0.91, so tests can tell inputs
    apart without a trained model. Takes the model's input convention: (N, 28, 28, 1) float32 in 0..1."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        labels = np.rint(batch.reshape(len(batch), -1).sum(axis=1)).astype(np.int64) % 10
        probabilities = np.full((len(batch), 10), 0.01, np.float32)
        probabilities[np.arange(len(batch)), labels] = 0.91
        return probabilities


def standin_digit(label: int) -> np.ndarray:
    """A 28x28 uint8 image that StandInModel labels `label` (that many white pixels)."""
    image = np.zeros((28, 28), np.uint8)
    image.ravel()[:label] = 255
    return image


def standin_digits(*labels: int) -> np.ndarray:
    """(len(labels), 28, 28) uint8: one `standin_digit` per label."""
    return np.stack([standin_digit(label) for label in labels])


def standin_loader(_backend: str, _folder: Path, _threads: int) -> StandInModel:
    return StandInModel()


@pytest.fixture
def standin_home(tmp_path: Path) -> Path:
    """Versions 1 and 2 in the store (stand-in metadata) and the real MNIST as the sample dataset."""
    for version in (1, 2):
        folder = tmp_path / "mnist" / str(version)
        folder.mkdir(parents=True)
        (folder / "metadata.json").write_text(json.dumps({"version": version, "test_accuracy": 0.9}))
    (tmp_path / "datasets").mkdir()
    os.symlink(SHARED_MNIST, tmp_path / "datasets" / "mnist.npz")
    return tmp_path


@pytest.fixture
def app(standin_home: Path) -> Iterator[Any]:
    """The real Flask app (every route, codec and the data plane) over StandInModel; it serves version 2."""
    from server.app import create_app
    from shared.config import Config

    application = create_app(Config(home=standin_home, max_batch_size=64), loader=standin_loader)
    yield application
    application.extensions["mnist"].manager.stop()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def promtool_problems(exposition: bytes) -> str:
    """What `promtool check metrics` says about an exposition text ("" when it finds nothing)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found: install Debian's prometheus package with `make promtool` "
                    "(scripts/install-promtool.sh; needs root and apt)")
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    problems = (checked.stdout + checked.stderr).decode(errors="replace").strip()
    return problems if checked.returncode != 0 or problems else ""
