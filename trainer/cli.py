"""`python -m trainer`: fetch MNIST, train, check, publish a new model version.

Every flag has an environment-variable twin (see shared/config.py); flags win.
Exit status: 0 published (or skipped on purpose), 1 not published, 2 bad configuration.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import dataset, logs
from shared.config import Config, ConfigError, env_name, parse_setting
from shared.dataset import DatasetError
from shared.model_store import KERAS_FILE, METADATA_FILE, ONNX_FILE, ModelStoreError
from shared.object_store import open_store
from trainer.export import QualityGateError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])

    def flag(name: str, field: str, help_text: str) -> None:
        def parse(text: str) -> Any:  # the variable's own checks, so `--epochs 0` fails like `EPOCHS=0`
            try:
                return parse_setting(field, text)
            except ValueError as error:
                raise argparse.ArgumentTypeError(f"{text!r} {error}") from None

        parser.add_argument(name, dest=field, type=parse, default=None, help=f"{help_text} (env {env_name(field)})")

    flag("--epochs", "epochs", "training epochs")
    flag("--batch-size", "batch_size", "training batch size")
    flag("--seed", "seed", "random seed")
    flag("--recipe", "recipe", "model recipe: seed or improved")
    flag("--train-subset", "train_subset", "train on the first N images only; 0 = all")
    flag("--min-accuracy", "min_accuracy", "quality gate on test accuracy")
    flag("--keep-versions", "keep_versions", "model versions to keep")
    flag("--home", "home", "shared volume root (model store and dataset cache)")
    parser.add_argument("--skip-if-published", dest="skip_if_published", action="store_const", const=True,
                        default=None, help=f"exit 0 if a model already exists (env {env_name('skip_if_published')})")
    return parser.parse_args(argv)


# Metadata name -> the distributions that provide it (TensorFlow is `tensorflow-cpu` in the image).
LIBRARIES = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tf2onnx": ("tf2onnx",),
}


def library_versions() -> dict[str, str]:
    """Versions of the installed libraries, read from package metadata: nothing is imported, so a
    host without TensorFlow (a JAX GPU host) records what it has instead of failing."""
    versions = {"python": platform.python_version()}
    for name, distributions in LIBRARIES.items():
        for distribution in distributions:
            try:
                versions[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def run(config: Config) -> int:
    store = open_store(config)
    if config.process_id == 0:  # the other processes of a multi-worker job never write to the store
        store.clean_stale_staging()
    if config.skip_if_published and store.latest() is not None:
        print(f"trainer: {store.base_path} already holds version {store.latest()}; not training (SKIP_IF_PUBLISHED)")
        return 0

    # Before anything imports Keras, which reads the backend once. Imported here so `--help` and
    # configuration errors answer without loading TensorFlow.
    from trainer import backend
    backend.select(config.keras_backend, config.jax_cache_path)
    from trainer import distributed, precision
    from trainer.export import check_onnx_agrees, export_onnx, export_saved_model
    from trainer.model import IMPROVED, optimizer_name
    from trainer.resume import Backup
    from trainer.train import evaluate, train

    job = distributed.job_from(config)

    path = dataset.fetch(config.dataset_url, config.dataset_sha256, config.dataset_path)
    data = dataset.load(path)
    images = config.train_subset or len(data.x_train)
    if job.distributed:
        distributed.join(job)  # before anything asks JAX for its devices
    device = backend.training_device()
    gpu_capability = (device.compute_capability or (0, 0)) if device.kind == "gpu" else None
    numerics = precision.resolve(config.precision, gpu_capability=gpu_capability)
    print(f"trainer: training on {images} images for {config.epochs} epochs in {numerics}"
          f" (TRAIN_PRECISION={config.precision}) on {config.keras_backend}, {device};"
          f" recipe {config.recipe} (MODEL_RECIPE)", flush=True)
    backup = Backup(config.home, {
        "batch_size": config.batch_size, "seed": config.seed, "train_subset": config.train_subset,
        "precision": numerics, "backend": config.keras_backend, "processes": job.processes,
        "dataset_sha256": config.dataset_sha256, "recipe": config.recipe,
        # The improved recipe's learning rate follows the whole run's length, so its epochs are not a prefix
        # of a longer run's: EPOCHS is part of its fingerprint.
        **({"epochs": config.epochs} if config.recipe == IMPROVED else {}),
    }, writer=job.is_chief)
    training = train(data, config.epochs, config.batch_size, config.seed, config.train_subset, numerics, backup, job,
                     config.recipe)
    if not job.is_chief:
        print(f"trainer: process {job.index} of {job.processes} done; process 0 evaluates and publishes", flush=True)
        return 0
    scores = evaluate(training.model, data.x_test, data.y_test)
    probabilities = scores.pop("probabilities")
    logs.emit(f"trainer: test accuracy {scores['test_accuracy']:.4f}, loss {scores['test_loss']:.4f}",
              test_accuracy=scores["test_accuracy"], test_loss=scores["test_loss"])
    if scores["test_accuracy"] < config.min_accuracy:
        backup.clear()  # the run is over: a rerun would train the same model again
        raise QualityGateError(
            f"test accuracy {scores['test_accuracy']:.4f} is below MIN_ACCURACY {config.min_accuracy}; not publishing"
        )

    with store.staging() as staged:
        training.model.save(staged / KERAS_FILE)
        if config.keras_backend == backend.TENSORFLOW:
            export_onnx(training.model, staged / ONNX_FILE)
        else:
            export_saved_model(staged / KERAS_FILE, staged / ONNX_FILE)
        difference = check_onnx_agrees(staged / ONNX_FILE, data.x_test, probabilities)
        metadata = {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "dataset_sha256": dataset.sha256_of(path),
            "hyperparameters": {
                "epochs": config.epochs,
                "batch_size": config.batch_size,
                "seed": config.seed,
                "train_images": training.train_images,
                "precision": numerics,
                "optimizer": optimizer_name(config.recipe),
                "loss": "categorical_crossentropy",
            },
            "recipe": config.recipe,
            "parameters": training.model.count_params(),
            "backend": config.keras_backend,
            "device": str(device),
            "history": training.history,
            **scores,
            "onnx_max_probability_difference": difference,
            "training_seconds": training.seconds,
            "libraries": library_versions(),
        }

        def stamp(folder: Path, version: int) -> None:
            (folder / METADATA_FILE).write_text(json.dumps({"version": version, **metadata}, indent=2))

        version = store.publish(staged, stamp)
    backup.clear()
    logs.emit(f"trainer: published version {version} to {store.version_dir(version)}", published_version=version,
              test_accuracy=scores["test_accuracy"])
    for old in store.prune(config.keep_versions):
        print(f"trainer: removed old version {old} (KEEP_VERSIONS={config.keep_versions})")
    for old in store.prune_retired(config.keep_versions):
        print(f"trainer: removed rolled-back version {old} (KEEP_VERSIONS={config.keep_versions})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = Config.from_env(**vars(args))
    except ConfigError as error:
        print(f"trainer: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        status = run(config)
    except ConfigError as error:  # settings that only make sense together (multi-worker training)
        print(f"trainer: {error}", file=sys.stderr)
        return 2
    except DatasetError as error:
        print(f"trainer: dataset error: {error}", file=sys.stderr)
        return 1
    except (QualityGateError, ModelStoreError) as error:
        print(f"trainer: not published: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # Typically a full disk while staging the new version (Keras' own message names no
        # file). The staging folder is already gone, so say that instead of a traceback.
        print(f"trainer: not published: writing under {config.home} failed: {error}."
              " No version was published and the partial files were removed.", file=sys.stderr)
        return 1
    seconds = round(time.perf_counter() - started, 1)
    logs.emit(f"trainer: done in {seconds:.1f} s", seconds=seconds)
    return status
