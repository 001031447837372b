"""Prometheus metrics, correct under several gunicorn workers.

gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at an empty folder before any worker
starts, so every worker writes its samples to files there and `/metrics` (answered by any
one worker) aggregates all of them. Without that variable (the app in a test client or a
plain `flask run`) the usual in-process registry is used.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("mnist_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "mnist_http_request_duration_seconds", "Time to answer a request", ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "mnist_inference_batch_size", "Images per inference call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
# One value per live worker (label pid): during a hot reload you can watch each worker move.
SERVED_VERSION = Gauge("mnist_model_served_version", "Model version this worker serves (0 = none)",
                       multiprocess_mode="liveall")
RELOADS = Counter("mnist_model_reloads_total", "Times a worker switched to another model version")
LOAD_FAILURES = Counter("mnist_model_load_failures_total", "Model versions that failed to load", ["version"])


def _route() -> str:
    # The URL rule, not the raw path, so that /samples/test/1.png and /samples/test/2.png share a series.
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def install(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        route = _route()
        REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            LATENCY.labels(route).observe(time.perf_counter() - started)
        return response


def render() -> tuple[bytes, str]:
    """The exposition text for every worker (or this process only, outside gunicorn)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
