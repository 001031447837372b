"""The Flask application factory."""

from __future__ import annotations

from flask import Flask

from server import batching, metrics, request_log, tracing, web
from server.backends import load_model
from server.body import BodyReader
from server.dataplane import DataPlane
from server.http_errors import register_error_handlers
from server.model_manager import Loader, ModelManager
from server.pipeline import Pipeline
from server.routes import ops, samples, tfserving, v2
from server.samples import SampleStore
from server.services import EXTENSION, Services
from shared.config import Config


def create_app(config: Config | None = None, watch: bool = True, loader: Loader = load_model) -> Flask:
    """Build the app; with `watch` it loads the current model now and then watches the store.

    `loader` opens a version's model file (tests pass a stand-in, so routes are tested without training).
    Under gunicorn this runs in each worker after the fork (no preload_app), so every worker
    has its own model and reload thread and TensorFlow (keras backend) is never forked.
    """
    config = config or Config.from_env()
    app = Flask(__name__, static_folder=None)  # static files belong to the web blueprint (/ui)
    # Werkzeug refuses larger bodies with 413 from Content-Length alone, before reading them.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False
    manager = ModelManager(config, loader)
    app.extensions[EXTENSION] = Services(config, manager, DataPlane(manager, config.max_batch_size,
                                                                 batching.from_config(config, metrics.observe_batch)),
                                         SampleStore(config.dataset_path))
    register_error_handlers(app)
    metrics.install(app)
    for blueprint in (ops.bp, tfserving.bp, v2.bp, samples.bp, web.bp):
        app.register_blueprint(blueprint)
    # Every predict route (server.pipeline.INFER_ROUTES) is answered ahead of Flask, through one path.
    bodies = BodyReader(config.max_body_bytes, config.body_seconds, config.body_buffer_bytes)
    app.wsgi_app = Pipeline(app.wsgi_app, app.extensions[EXTENSION], bodies)  # type: ignore[method-assign]
    tracing.setup()  # only with OTEL_EXPORTER_OTLP_*ENDPOINT; here, after gunicorn's fork: one exporter per worker
    request_log.install(app)  # last: its line covers everything above, whatever answers the request
    if watch:
        manager.start(load_first=config.backend == "onnx")
    return app
