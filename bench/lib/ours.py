"""Our server as the benchmarks start it: gunicorn with server/gunicorn.conf.py and docker-compose.yml's settings."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.common import BENCH_HOME
from bench.lib.processes import Launch
from shared.model_store import ONNX_FILE, ModelStore

# docker-compose.yml's server environment, at its defaults: shared/config.py's, but JSON log lines
# (tests/integration/test_bench_compose_env.py keeps the two equal).
COMPOSE_SERVER_ENV = {"WEB_CONCURRENCY": "2", "THREADS": "1", "INFERENCE_THREADS": "1", "RELOAD_INTERVAL": "2",
                      "MAX_BATCH_SIZE": "1024", "REQUEST_TIMEOUT": "30", "AUTH_TOKEN": "", "LOG_FORMAT": "json"}
# Parts measured before they recorded their layout ran with THREADS=2, the default until then.
EARLIER_LAYOUT = "2 gthread workers x 2 threads"
V2_INFER = "/v2/models/mnist/infer"


def server_layout(env: dict[str, str] = COMPOSE_SERVER_ENV) -> str:
    """The server's processes and threads, as reports name them (saved with each part that starts our server)."""
    return f"{env['WEB_CONCURRENCY']} gevent workers x {env['THREADS']} compute thread(s)"


def launch(name: str, port: int, config: str = "server/gunicorn.conf.py", app: str = "server.wsgi:app",
           log_name: str = "", **settings: str) -> Launch:
    """Our server on 127.0.0.1:`port` serving the benchmark's model, compose's settings overridden by `settings`;
    `app` another WSGI app for gunicorn (a variant of ours a part compares), logging to TMP/`log_name`.log."""
    env = {**COMPOSE_SERVER_ENV, "MNIST_HOME": str(BENCH_HOME), "TF_CPP_MIN_LOG_LEVEL": "2", "BIND_HOST": "127.0.0.1",
           "PORT": str(port), **settings}
    return Launch(name, [sys.executable, "-m", "gunicorn", "-c", config, app], "/readyz", env=env, log_name=log_name)


def published(file: str = ONNX_FILE) -> Path:
    """`file` of the newest model in the benchmark's home: the one the training part of `make bench` published."""
    store = ModelStore(BENCH_HOME / "mnist")
    if store.latest() is None:
        raise SystemExit(f"no model in {BENCH_HOME}: run `make bench` first (its training part publishes one)")
    return store.version_dir(store.latest()) / file
