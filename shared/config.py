"""The one place where configuration lives.

Every setting is an environment variable with a documented default. `Config.from_env()`
parses and validates all of them at start-up and reports every bad value in one error,
so a typo in docker-compose.yml fails fast with a message instead of misbehaving later.
The README's configuration table is generated from `SETTINGS` (see `config_table()`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KERAS_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MODEL_NAME = "mnist"
BACKENDS = ("onnx", "keras")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
RECIPES = ("seed", "improved")  # trainer/model.py: the reference CNN, or the batch-norm one (docs/training.md)
# Each recipe's own epoch count, used when EPOCHS is empty or `auto`: improved reaches its accuracy target within
# the seed recipe's 6-epoch time only at 5 epochs (docs/training.md, bench/results.md "Model recipes").
RECIPE_EPOCHS = {"seed": 6, "improved": 5}
AUTO_EPOCHS = "auto"
# Keras 3 backends the trainer supports; the model code is backend-neutral (Keras ops only).
KERAS_BACKENDS = ("tensorflow", "jax")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError("must be a whole number") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError("must be a number") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 1 <= value <= 65535:
        raise ValueError("must be a TCP port, 1 to 65535")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not 0 < value < float("inf"):
        raise ValueError("must be greater than 0")
    return value


def _path(text: str) -> Path:
    if not text.strip():
        raise ValueError("must not be empty")
    return Path(text)


def _fraction(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _sha256(text: str) -> str:
    lowered = text.strip().lower()
    if len(lowered) != 64 or any(c not in "0123456789abcdef" for c in lowered):
        raise ValueError("must be 64 hexadecimal digits")
    return lowered


def _store_url(text: str) -> str:
    text = text.strip()
    if text and not (text.startswith("s3://") and len(text) > 5 and not text[5:].startswith("/")):
        raise ValueError("must be empty (the volume under MNIST_HOME) or s3://bucket[/prefix]")
    return text


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _optional_version(text: str) -> int | None:
    return _positive_int(text) if text.strip() else None


def _epochs(text: str) -> int | str:
    """`auto` for empty or `auto` (the recipe's own count, resolved in `Config.__post_init__`), else at least 1.

    `auto` is a value, not None, so that `--epochs auto` wins over an EPOCHS in the environment like any flag.
    """
    if text.strip().lower() in ("", AUTO_EPOCHS):
        return AUTO_EPOCHS
    try:
        return _positive_int(text)
    except ValueError as error:
        raise ValueError(f"{error}, or {AUTO_EPOCHS} (empty) for the recipe's own count") from None


def _setting(env: str, default: str, parse: Callable[[str], Any], used_by: str, help: str) -> Any:
    return dataclasses.field(
        default=parse(default),
        metadata={"env": env, "default": default, "parse": parse, "used_by": used_by, "help": help},
    )


@dataclass(frozen=True)
class Config:
    # Shared volume
    home: Path = _setting("MNIST_HOME", "var", _path, "both",
                          "Shared volume root: model store in `<home>/mnist/`, dataset cache in `<home>/datasets/`.")
    model_store: str = _setting("MODEL_STORE", "", _store_url, "both",
                                "Empty: the model store is `<home>/mnist/` on the volume. `s3://bucket/prefix`: a"
                                " bucket (standard AWS settings, `AWS_ENDPOINT_URL` for MinIO, Ceph, R2); the server"
                                " keeps a verified copy in `<home>/mnist/` (docs/s3.md).")
    dataset_url: str = _setting("MNIST_URL", KERAS_MNIST_URL, str, "trainer",
                                "Where to download `mnist.npz` from (http(s)://, file:// or a local path).")
    dataset_sha256: str = _setting("MNIST_SHA256", KERAS_MNIST_SHA256, _sha256, "trainer",
                                   "Expected SHA-256 of the downloaded file (Keras' value by default).")
    # Logs (server and trainer)
    log_format: str = _setting("LOG_FORMAT", "text", _one_of("text", "json"), "both",
                               "`json`: one JSON object per log line, for a log collector (the containers' default);"
                               " `text`: one readable line (docs/operating.md).")
    access_log: bool = _setting("ACCESS_LOG", "false", _boolean, "server",
                                "Also write gunicorn's own access line; the server's request log already has one"
                                " line per request with its id (docs/operating.md).")
    # Training
    # Always an int once built: `auto` becomes the recipe's own count in __post_init__.
    epochs: int = _setting("EPOCHS", AUTO_EPOCHS, _epochs, "trainer",
                           f"Training epochs; `{AUTO_EPOCHS}` or empty: the recipe's own count ("
                           + ", ".join(f"{count} for `{recipe}`" for recipe, count in RECIPE_EPOCHS.items())
                           + ", docs/training.md).")
    batch_size: int = _setting("BATCH_SIZE", "128", _positive_int, "trainer", "Training batch size.")
    seed: int = _setting("SEED", "1337", _non_negative_int, "trainer", "Random seed (weights, dropout, shuffling).")
    train_subset: int = _setting("TRAIN_SUBSET", "0", _non_negative_int, "trainer",
                                 "Train on the first N training images only (0 = all 60,000); for quick runs.")
    precision: str = _setting("TRAIN_PRECISION", "auto", _one_of(*PRECISIONS), "trainer",
                              "`auto`: mixed bfloat16 on CPUs with AMX (faster, same accuracy) and on GPUs of"
                              " compute capability 8.0 or newer, float32 elsewhere; or force `float32` /"
                              " `mixed_bfloat16`. The published model is float32.")
    recipe: str = _setting("MODEL_RECIPE", "seed", _one_of(*RECIPES), "trainer",
                           "`seed`: the reference CNN of the Keras example; `improved`: batch normalisation, light"
                           " augmentation and a one-cycle learning rate in the same time (docs/training.md).")
    keras_backend: str = _setting("KERAS_BACKEND", "tensorflow", _one_of(*KERAS_BACKENDS), "trainer",
                                  "Keras backend that trains: `tensorflow` (fastest on CPU here) or `jax` (GPUs, see"
                                  " docker-compose.gpu.yml). ONNX is exported under TensorFlow either way.")
    # Multi-worker training (trainer/distributed.py): Keras' own variable names where it has them.
    num_processes: int = _setting("KERAS_DISTRIBUTION_NUM_PROCESSES", "1", _positive_int, "trainer",
                                  "Trainer processes that train one model together (KERAS_BACKEND=jax); 1 = alone."
                                  " `make retrain WORKERS=N` starts N.")
    process_id: int = _setting("KERAS_DISTRIBUTION_PROCESS_ID", "0", _non_negative_int, "trainer",
                               "This process's index in the job, 0 to N-1; process 0 coordinates and publishes.")
    job_addresses: str = _setting("KERAS_DISTRIBUTION_JOB_ADDRESSES", "", str, "trainer",
                                  "`host:port` of process 0, the coordinator (or every process's, comma-separated,"
                                  " process 0 first, as Keras reads it).")
    distribution_timeout: int = _setting("DISTRIBUTION_TIMEOUT", "120", _positive_int, "trainer",
                                         "Seconds a process waits for the others to join, or for a training step,"
                                         " before it fails saying which process it lost.")
    min_accuracy: float = _setting("MIN_ACCURACY", "0.98", _fraction, "trainer",
                                   "Quality gate: a model below this test accuracy is not published.")
    keep_versions: int = _setting("KEEP_VERSIONS", "5", _positive_int, "trainer",
                                  "How many model versions the store keeps after a publish; older ones are deleted."
                                  " As many rolled-back ones are kept for inspection.")
    skip_if_published: bool = _setting("SKIP_IF_PUBLISHED", "false", _boolean, "trainer",
                                       "Exit 0 without training when the store holds a model (compose's train-once).")
    # Serving
    backend: str = _setting("MODEL_BACKEND", "onnx", _one_of(*BACKENDS), "server",
                            "`onnx` serves `model.onnx` with ONNX Runtime; `keras` serves `model.keras` with Keras.")
    pinned_version: int | None = _setting("MODEL_VERSION", "", _optional_version, "server",
                                          "Serve this version only (empty = always the newest).")
    reload_interval: float = _setting("RELOAD_INTERVAL", "2", _positive_float, "server",
                                      "Seconds between checks of the model store for a new version.")
    inference_threads: int = _setting("INFERENCE_THREADS", "1", _positive_int, "server",
                                      "Intra-op threads per worker; workers x threads should not exceed the cores.")
    max_batch_size: int = _setting("MAX_BATCH_SIZE", "1024", _positive_int, "server", "Most images in one request.")
    max_body_bytes: int = _setting("MAX_BODY_BYTES", str(32 * 1024 * 1024), _positive_int, "server",
                                   "Largest request body accepted; larger ones get 413 without being read.")
    body_seconds: float = _setting("BODY_SECONDS", "10", _positive_float, "server",
                                   "Longest a request body may take to arrive whole; later, 408 (small bodies"
                                   " are also cut when slower than 16 KiB/s after a 0.5 s grace).")
    body_buffer_bytes: int = _setting("BODY_BUFFER_BYTES", str(64 * 1024 * 1024), _positive_int, "server",
                                      "Most bytes of request bodies one worker holds at once; beyond, 503 with"
                                      " Retry-After. At least MAX_BODY_BYTES.")
    batching: bool = _setting("BATCHING", "false", _boolean, "server",
                              "Merge concurrent small requests into one model call per worker (adaptive batching).")
    batch_max_size: int = _setting("BATCH_MAX_SIZE", "64", _positive_int, "server",
                                   "Batching: most images in one merged model call; larger requests run alone.")
    batch_timeout_micros: int = _setting("BATCH_TIMEOUT_MICROS", "0", _non_negative_int, "server",
                                         "Batching: longest a request waits for others to join its model call"
                                         " (0: merge only what queued while the model was busy).")
    batch_max_queue: int = _setting("BATCH_MAX_QUEUE", "1024", _positive_int, "server",
                                    "Batching: most images waiting per worker; beyond, 503 with Retry-After.")
    bind_host: str = _setting("BIND_HOST", "0.0.0.0", str, "server", "Address gunicorn listens on.")
    port: int = _setting("PORT", "8000", _port, "server", "TCP port gunicorn listens on.")
    grpc_port: int = _setting("GRPC_PORT", "8001", _port, "server",
                              "TCP port the gRPC server (python -m server.transports.grpc_server) listens on.")
    grpc_threads: int = _setting("GRPC_THREADS", "8", _positive_int, "server",
                                 "gRPC server threads for the work that may block (model runs above a few "
                                 "images, version loads, store reads, waits for a batch); more wait for one.")
    grpc_processes: int = _setting("GRPC_PROCESSES", "2", _positive_int, "server",
                                   "gRPC server processes sharing GRPC_PORT (SO_REUSEPORT), each with its own"
                                   " event loop and model, as gunicorn's workers; 1: one process, no supervisor.")
    grpc_metrics_port: int = _setting("GRPC_METRICS_PORT", "8002", _port, "server",
                                      "TCP port of the gRPC server's Prometheus /metrics (plain HTTP).")
    workers: int = _setting("WEB_CONCURRENCY", "2", _positive_int, "server", "gunicorn worker processes.")
    threads: int = _setting("THREADS", "1", _positive_int, "server",
                           "Compute threads per gunicorn worker (images, bodies over 16 KiB, model runs over 8 images);"
                           " connections are read on the worker's event loop.")
    request_timeout: int = _setting("REQUEST_TIMEOUT", "30", _positive_int, "server",
                                    "Seconds a worker's event loop may go without a heartbeat before gunicorn restarts"
                                    " it; also the drain on SIGTERM.")
    auth_token: str = _setting("AUTH_TOKEN", "", str, "server",
                               "When set, the prediction routes (/predict, :predict, v2 infer) need "
                               "`Authorization: Bearer <token>`.")

    def __post_init__(self) -> None:
        if self.epochs == AUTO_EPOCHS:  # frozen: set once, here, before anyone reads it
            object.__setattr__(self, "epochs", RECIPE_EPOCHS[self.recipe])

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read every setting from `environ` (default: the process environment).

        `overrides` (already-typed values, e.g. from CLI flags) win over the environment.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        errors: list[str] = []
        for spec in dataclasses.fields(cls):
            if spec.name in overrides and overrides[spec.name] is not None:
                values[spec.name] = overrides[spec.name]
                continue
            raw = environ.get(spec.metadata["env"])
            if raw is None:
                continue
            try:
                values[spec.name] = spec.metadata["parse"](raw)
            except ValueError as error:
                errors.append(f"{spec.metadata['env']}={raw!r}: {error}")
        if errors:
            raise ConfigError("invalid configuration: " + "; ".join(errors))
        return cls(**values)

    @property
    def model_base_path(self) -> Path:
        return self.home / MODEL_NAME

    @property
    def dataset_path(self) -> Path:
        return self.home / "datasets" / "mnist.npz"

    @property
    def jax_cache_path(self) -> Path:
        """JAX's persistent compilation cache: on the volume, so the next training run reuses it."""
        return self.home / "cache" / "jax"


def _field(field_name: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(Config) if f.name == field_name)


def env_name(field_name: str) -> str:
    """The environment variable behind a `Config` field."""
    return _field(field_name).metadata["env"]


def parse_setting(field_name: str, text: str) -> Any:
    """Parse `text` as the value of a `Config` field, with the same checks as its variable.

    Raises ValueError saying what a good value looks like (CLI flags use it, so that
    `--epochs 0` is refused just like `EPOCHS=0`).
    """
    return _field(field_name).metadata["parse"](text)


def config_table() -> str:
    """The README's configuration table, as Markdown."""
    rows = ["| Variable | Default | Used by | Meaning |", "| --- | --- | --- | --- |"]
    for spec in dataclasses.fields(Config):
        meta = spec.metadata
        default = f"`{meta['default']}`" if meta["default"] else "(empty)"
        rows.append(f"| `{meta['env']}` | {default} | {meta['used_by']} | {meta['help']} |")
    return "\n".join(rows)
