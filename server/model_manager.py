"""Which model answers: load, warm up, hot-reload, pin, roll back, and remember failures.

A background thread in each worker (a greenlet under the gevent worker) polls the model store
every RELOAD_INTERVAL seconds (polling, not inotify: it works on any Docker volume). The newest
version that has not failed to load is loaded and warmed on a real thread (server.compute's
load thread, so the worker's event loop keeps serving meanwhile), then swapped in with one reference
assignment, so a request that already holds the old model finishes with it and no
request ever waits for or fails on a reload. A version that fails to load is remembered
with its error (shown by /models and /metrics) and not retried until its folder changes;
the model that was serving keeps serving. When the newest folder disappears (rollback),
the now-newest version is served.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server import metrics
from server.backends import Model, load_model
from server.compute import offload_load
from server.errors import NotFound, Unavailable
from server.store_sync import open_sync
from shared.config import MODEL_NAME, Config
from shared.image import IMAGE_SHAPE
from shared.model_store import ModelStore, ModelStoreError
from shared.preprocess import scale_pixels

log = logging.getLogger(__name__)
EXTRA_VERSIONS_CACHED = 2  # explicitly requested older/newer versions kept loaded (LRU)
WARM_BATCH = 256


@dataclass(frozen=True)
class LoadedModel:
    version: int
    model: Model
    metadata: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Failure:
    version: int
    error: str
    identity: tuple[int, int]  # (inode, mtime) of the folder: a replaced folder is tried again


Loader = Callable[[str, Path, int], Model]


class ModelManager:
    def __init__(self, config: Config, loader: Loader = load_model) -> None:
        self.config = config
        self.store = ModelStore(config.model_base_path)
        # A bucket store (MODEL_STORE=s3://...) is copied into model_base_path, verified, before each check.
        self._sync = open_sync(config.model_store, MODEL_NAME, config.model_base_path)
        self._loader = loader
        self._current: LoadedModel | None = None
        self._failures: dict[int, Failure] = {}
        self._extra: OrderedDict[int, LoadedModel] = OrderedDict()
        self._poll_lock = threading.Lock()
        self._extra_lock = threading.Lock()
        self._loading: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_waiting = False  # "waiting for a first model" is logged once, not on every poll
        metrics.SERVED_VERSION.set(0)

    # -- what requests use -------------------------------------------------------------

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def get(self, version: int | None = None) -> LoadedModel:
        """The served model, or an explicitly requested version (loaded on demand, small LRU)."""
        current = self._current
        if version is None or (current is not None and current.version == version):
            if current is None:
                raise Unavailable(self.not_ready_reason())
            return current
        with self._extra_lock:
            if version in self._extra:
                self._extra.move_to_end(version)
                return self._extra[version]
            if not self.store.has_version(version):
                raise NotFound(f"model version {version} not found; versions in the store: {self.store.versions()}")
            failure = self._failure(version)
            if failure is not None:
                raise Unavailable(f"model version {version} failed to load: {failure.error}")
            loaded = self._load(version, warm=False)
            if loaded is None:
                raise Unavailable(f"model version {version} failed to load: {self._failures[version].error}")
            self._extra[version] = loaded
            while len(self._extra) > EXTRA_VERSIONS_CACHED:
                self._extra.popitem(last=False)
            return loaded

    def not_ready_reason(self) -> str:
        base = self.store.base_path if self._sync is None else self._sync.remote.base_path
        pinned = self.config.pinned_version
        if self._loading is not None:
            return f"loading model version {self._loading}"
        if self._sync is not None and self._sync.error is not None:
            return f"no model loaded yet and the model store is unreachable: {self._sync.error}"
        if pinned is not None:
            failure = self._failure(pinned)
            if failure is not None:
                return f"pinned MODEL_VERSION={pinned} failed to load: {failure.error}"
            return f"pinned MODEL_VERSION={pinned} is not in {base}; versions there: {self.store.versions()}"
        versions = self.store.versions()
        if not versions and self._sync is not None and self._sync.refused:
            refused = "; ".join(f"version {v}: {reason}" for v, (_etag, reason) in sorted(self._sync.refused.items()))
            return f"no verified model from {base} yet; refused {refused}"
        if not versions:
            return f"no model in {base} yet; waiting for the trainer to publish one"
        return f"no loadable model in {base}: versions {versions} all failed to load (see /models)"

    def failures(self) -> list[dict[str, Any]]:
        """Failed versions that are still in the store."""
        present = set(self.store.versions())
        recorded = list(self._failures.values())  # a copy: the reload thread may add one meanwhile
        return [{"version": f.version, "error": f.error} for f in sorted(recorded, key=lambda f: f.version)
                if f.version in present]

    # -- the reload loop -----------------------------------------------------------------

    def start(self, load_first: bool = True) -> None:
        """Watch the store in the background; with `load_first`, load what is there now before returning.

        Loading first means a worker only takes requests once its model is warm. The keras backend
        does not: importing TensorFlow can outlast gunicorn's boot timeout, so it loads in the
        thread and the worker answers 503 (with the reason) until then.
        """
        if load_first:
            self._safe_poll()
        self._thread = threading.Thread(target=self._watch, args=(not load_first,), name="model-reload",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, poll_now: bool) -> None:
        if poll_now:
            self._safe_poll()
        while not self._stop.wait(self.config.reload_interval):
            self._safe_poll()

    def _safe_poll(self) -> None:
        try:
            self.poll()
        except Exception:  # the watcher must outlive any surprise (an NFS hiccup, a race)
            log.exception("model reload check failed; will try again")

    def poll(self) -> None:
        """Serve the version that should be served now, if it is not already."""
        with self._poll_lock:
            if self._sync is not None:
                with contextlib.suppress(ModelStoreError):  # logged by the sync; the local copy still serves
                    self._sync.sync()
            pinned = self.config.pinned_version
            candidates = [pinned] if pinned is not None else sorted(self.store.versions(), reverse=True)
            for version in candidates:
                current = self._current
                if current is not None and current.version == version:
                    return
                if not self.store.has_version(version) or self._failure(version) is not None:
                    continue
                self._loading = version
                try:
                    loaded = self._load(version, warm=True)
                finally:
                    self._loading = None
                if loaded is not None:
                    self._swap(loaded)
                    return
            if self._current is None and not self._said_waiting:
                self._said_waiting = True
                log.info("waiting for a first model: %s", self.not_ready_reason())

    def _swap(self, loaded: LoadedModel) -> None:
        previous = self._current
        self._current = loaded  # one assignment: requests see the old or the new model, never half of one
        metrics.SERVED_VERSION.set(loaded.version)
        if previous is not None:
            metrics.RELOADS.inc()
        log.info("serving model version %d (was %s)", loaded.version, previous.version if previous else "none")

    def _load(self, version: int, warm: bool) -> LoadedModel | None:
        folder = self.store.version_dir(version)
        started = time.perf_counter()
        try:
            metadata = self.store.metadata(version)
            # Off the worker's event loop (server.compute): building and warming a model takes long enough
            # to stall every connection of the worker meanwhile.
            loaded = offload_load(self._build, version, folder, metadata, warm)
        except Exception as error:  # any library's error: the version is unusable, the server is not
            self._record_failure(version, folder, f"{type(error).__name__}: {error}")
            return None
        log.info("loaded model version %d (%s) in %.2f s", version, self.config.backend,
                 time.perf_counter() - started)
        return loaded

    def _build(self, version: int, folder: Path, metadata: dict[str, Any], warm: bool) -> LoadedModel:
        loaded = LoadedModel(version, self._loader(self.config.backend, folder, self.config.inference_threads),
                             metadata)
        self._check_and_warm(loaded, warm)
        return loaded

    def _check_and_warm(self, loaded: LoadedModel, warm: bool) -> None:
        # Batch 1 (interactive use) and a large batch: their first runs pay for lazy initialisation and
        # allocation. Capped so that a huge MAX_BATCH_SIZE does not make start-up slow.
        sizes = (1, min(self.config.max_batch_size, WARM_BATCH)) if warm else (1,)
        for size in sizes:
            probabilities = loaded.model.predict(scale_pixels(np.zeros((size, *IMAGE_SHAPE), np.float32)))
            problem = probability_problem(probabilities, size)
            if problem:
                raise ModelStoreError(f"model is not servable: {problem}")

    def _record_failure(self, version: int, folder: Path, error: str) -> None:
        self._failures[version] = Failure(version, error, _identity(folder))
        metrics.LOAD_FAILURES.labels(str(version)).inc()
        log.error("model version %d failed to load; keeping the current model: %s", version, error)

    def _failure(self, version: int) -> Failure | None:
        failure = self._failures.get(version)
        if failure is not None and failure.identity != _identity(self.store.version_dir(version)):
            self._failures.pop(version, None)  # the folder was replaced: worth another try
            return None
        return failure


def probability_problem(probabilities: np.ndarray, count: int) -> str | None:
    """Why an answer is not `count` rows of ten softmax probabilities (None when it is)."""
    if probabilities.shape != (count, 10):
        return f"it answers shape {probabilities.shape}, expected ({count}, 10)"
    if not np.isfinite(probabilities).all():
        return "it answers NaN or infinite values"
    if probabilities.min() < 0 or probabilities.max() > 1 or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
        return "its answers are not probabilities (each row must be 0..1 and sum to 1)"
    return None


def _identity(folder: Path) -> tuple[int, int]:
    try:
        stat = folder.stat()
    except OSError:
        return (0, 0)
    return (stat.st_ino, stat.st_mtime_ns)
