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

# Both transports record requests in these two families, told apart by `protocol` ("http" for gunicorn's
# routes, "grpc" for server/transports/grpc_server.py), so one query or alert rule covers both. `status` is
# what the client saw: the HTTP status code, or the gRPC status code's name (OK, INVALID_ARGUMENT, ...).
# Every label value comes from a fixed set (routes are URL rules or the service's method paths).
REQUESTS = Counter("mnist_requests_total", "Requests answered (HTTP and gRPC)",
                   ["protocol", "method", "route", "status"])
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LATENCY = Histogram("mnist_request_duration_seconds", "Time to answer a request (HTTP and gRPC)",
                    ["protocol", "route"], buckets=LATENCY_BUCKETS)
BATCH_SIZE = Histogram(
    "mnist_inference_batch_size", "Images per inference call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
)
# Adaptive batching (server/batching.py, BATCHING=true): what each merged call held and how long requests waited.
BATCHED_IMAGES = Histogram(
    "mnist_batching_batch_images", "Images per merged model call",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCHED_REQUESTS = Histogram(
    "mnist_batching_batch_requests", "Requests merged into one model call",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
)
BATCHING_QUEUE = Histogram(
    "mnist_batching_queue_seconds", "Time a request waited in the batching queue before its model call",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
# Requests the batching queue refused (BATCH_MAX_QUEUE images already waiting): each answered 503 + Retry-After,
# over gRPC UNAVAILABLE. Counted where the data plane meets the batcher, the one place both transports pass.
QUEUE_FULL = Counter("mnist_batching_queue_full_total", "Requests refused because the batching queue was full")
# Requests refused because their worker held BODY_BUFFER_BYTES of bodies already (server/body.py): each 503.
BODY_BUDGET_FULL = Counter("mnist_body_budget_full_total",
                           "Requests refused because their worker held its BODY_BUFFER_BYTES of request bodies")
# One value per live worker (label pid): during a hot reload you can watch each worker move.
SERVED_VERSION = Gauge("mnist_model_served_version", "Model version this worker serves (0 = none)",
                       multiprocess_mode="liveall")
RELOADS = Counter("mnist_model_reloads_total", "Times a worker switched to another model version")
LOAD_FAILURES = Counter("mnist_model_load_failures_total", "Model versions that failed to load", ["version"])


# Label values come from this fixed set: any 3-20 letter word is a valid HTTP method to Werkzeug, and each
# invented one would otherwise be a new series in every worker's metric files and in /metrics.
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


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
        started = g.get("metrics_started")
        observe_request("http", method_label(request.method), _route(), str(response.status_code), started)
        return response


def observe_request(protocol: str, method: str, route: str, status: str, started: float | None) -> None:
    """One answered request (`started`: its time.perf_counter() at arrival, None when unknown)."""
    REQUESTS.labels(protocol, method, route, status).inc()
    if started is not None:
        LATENCY.labels(protocol, route).observe(time.perf_counter() - started)


def multiprocess_registry() -> CollectorRegistry:
    """A registry adding up the samples every process wrote to PROMETHEUS_MULTIPROC_DIR."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


def render() -> tuple[bytes, str]:
    """The exposition text for every worker (or this process only, outside gunicorn)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(multiprocess_registry()), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def observe_batch(images: int, requests: int, waits: list[float]) -> None:
    """The batching observer (`Batcher(observe=metrics.observe_batch)`)."""
    BATCHED_IMAGES.observe(images)
    BATCHED_REQUESTS.observe(requests)
    for wait in waits:
        BATCHING_QUEUE.observe(wait)
