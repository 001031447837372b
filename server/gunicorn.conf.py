"""gunicorn settings, all from `shared.config.Config` (environment variables).

    python -m gunicorn -c server/gunicorn.conf.py server.wsgi:app

No preload_app: each worker builds the app after the fork, so it has its own model, its own
reload thread and (keras backend) its own TensorFlow, which is not fork-safe. On SIGTERM
gunicorn stops accepting, lets requests in flight finish (graceful_timeout), then exits.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `shared` and `server` importable from anywhere

from gunicorn import glogging

from server import metrics_dir
from server.balance import ConnectionTable
from shared.config import Config, ConfigError
from shared.logs import dict_config

try:
    _config = Config.from_env()
except ConfigError as error:
    sys.exit(f"server: {error}")

bind = f"{_config.bind_host}:{_config.port}"
workers = _config.workers
# gunicorn's gevent worker: one event loop per worker reads every connection, headers and body, so a
# silent or slow client holds a greenlet, never a thread; only complete requests reach the compute threads
# (THREADS real threads per worker: server/compute.py). Headers must arrive within `keepalive` seconds (the
# gevent worker times the header read with it), bodies faster than server/body.py's floor. The subclass adds
# least-connections accept across the workers (server/worker.py). Measured against the gthread worker it
# replaced: bench/results.md, "Hostile clients".
worker_class = "server.worker.BalancedGeventWorker"
worker_connections = 1000  # connections per worker (greenlets): what silent clients can fill, not threads
threads = _config.threads
# One listening socket shared by the workers, each accepting only while it holds no more connections than
# any other (server/worker.py, server/balance.py): SO_REUSEPORT's hash spreads unevenly.
reuse_port = False
# Room for TTIN-added workers and for a reload's new workers while the old ones drain.
_connections = ConnectionTable(seats=max(64, 4 * workers))
timeout = _config.request_timeout
graceful_timeout = _config.request_timeout
keepalive = 5
preload_app = False
# No runtime control socket: one fixed path per user would clash between several servers on a host.
control_socket_disable = True
# Docker's /tmp may be a slow overlay; /dev/shm keeps the heartbeat files in memory where it exists.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# prometheus_client's multiprocess mode: every worker writes its metric files to one folder, set before
# any worker imports prometheus_client (server/metrics_dir.py).
_metrics_dir, _own_metrics_dir = metrics_dir.prepare("mnist-metrics-")

# Everything to stdout in LOG_FORMAT (json or text), so `docker logs` shows one ordered stream.
logconfig_dict = dict_config(_config.log_format)
# The app writes one line per request with its id, route, model version and latency (server/request_log.py);
# gunicorn's own access line says less, so it is off unless ACCESS_LOG=true. Neither writes request headers,
# so an Authorization token is never logged.
accesslog = "-" if _config.access_log else None


class _Logger(glogging.Logger):
    """gunicorn's logger, but its access line only with ACCESS_LOG=true: gunicorn writes it whenever a
    logconfig_dict is set (ours always is), building every header and environ item into it per request."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)


logger_class = _Logger


def pre_request(worker, req) -> None:
    if worker.should_shed(req):
        req.must_close = True  # the client reconnects, to a worker with fewer connections (server/worker.py)
    worker.log.debug("%s %s", req.method, req.path)


def pre_fork(_server, worker) -> None:
    worker.connection_seat = _connections.seat()  # in the master, so no two workers take one seat


def child_exit(_server, worker) -> None:
    from prometheus_client import multiprocess

    if getattr(worker, "connection_seat", None) is not None:
        worker.connection_seat.release()

    multiprocess.mark_process_dead(worker.pid)  # drop the dead worker's live gauges


def on_exit(_server) -> None:
    metrics_dir.remove(_metrics_dir, _own_metrics_dir)


def post_worker_init(_worker) -> None:
    import gc

    from server import compute

    compute.attach(_config.threads)

    # Everything loaded so far (Flask, numpy, onnx, the model) lives as long as the worker: out of the
    # collector's sight, a full collection no longer walks it, and each collection is a pause of every
    # connection and compute thread in the worker.
    gc.freeze()
