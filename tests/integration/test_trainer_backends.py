"""The trainer on the Keras JAX backend (issue 15): a CPU run of the GPU path, its ONNX export under
TensorFlow, and the GPU check's Python half.

The JAX run is the real trainer CLI on 2,000 images for 1 epoch (minutes on 2 busy cores, most of it
JAX's CPU convolutions and the TensorFlow export process). The GPU image is built and run in
tests/system/test_trainer_gpu_image.py; backend and precision choice are in tests/unit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_MNIST, run_trainer

from shared.model_store import KERAS_FILE, METADATA_FILE, ONNX_FILE, ModelStore
from trainer.export import PROBABILITY_TOLERANCE, QualityGateError, export_saved_model

JAX_SLICE = {"KERAS_BACKEND": "jax", "TRAIN_SUBSET": "2000", "EPOCHS": "1"}


@pytest.fixture(scope="module")
def jax_home(tmp_path_factory: pytest.TempPathFactory, mnist_http) -> tuple[Path, subprocess.CompletedProcess]:
    """A volume that the real trainer filled on the JAX backend (CPU)."""
    home = tmp_path_factory.mktemp("jax-home")
    result = run_trainer(home, mnist_http.url(), **JAX_SLICE)
    assert result.returncode == 0, f"trainer failed:\n{result.stdout}\n{result.stderr}"
    return home, result


def test_a_jax_trained_model_is_published_with_an_onnx_file_that_passed_the_gate(jax_home):
    home, result = jax_home
    folder = ModelStore(home / "mnist").version_dir(1)
    assert {KERAS_FILE, ONNX_FILE, METADATA_FILE} <= {path.name for path in folder.iterdir()}
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["backend"] == "jax" and metadata["device"] == "cpu"
    assert 0 <= metadata["onnx_max_probability_difference"] <= PROBABILITY_TOLERANCE
    assert metadata["libraries"]["jax"] and metadata["libraries"]["keras"].startswith("3.")
    assert metadata["hyperparameters"]["train_images"] == 2000
    assert "on jax, cpu" in result.stdout and "published version 1" in result.stdout
    # The compiled steps were kept for the next run, on the volume beside the store.
    assert any((home / "cache" / "jax").iterdir())


def subprocess_env() -> dict[str, str]:
    """This environment without JAX's cache settings (each run here picks its own folder)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("JAX_")}
    return {**env, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_export_onnx_check_reports_accuracy_and_agreement_for_a_model_trained_elsewhere(jax_home, tmp_path):
    model = ModelStore(jax_home[0] / "mnist").version_dir(1) / KERAS_FILE
    result = subprocess.run(
        [sys.executable, "-m", "trainer.export_onnx", str(model), "--onnx", str(tmp_path / "m.onnx"),
         "--check", str(SHARED_MNIST)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ONNX agrees on all 10000 labels" in result.stdout and (tmp_path / "m.onnx").stat().st_size > 0


def test_a_failed_export_stops_the_publish_with_the_reason(tmp_path):
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a keras file")
    with pytest.raises(QualityGateError, match="ONNX export under the TensorFlow backend failed"):
        export_saved_model(broken, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_the_gpu_checks_training_half_runs_without_a_gpu(tmp_path):
    """bench/gpu_train.py (what bench/gpu_check.sh runs on the GPU host) on a slice, twice: the
    second run compiles nothing new, it loads every program from the cache the first one wrote."""
    command = [sys.executable, "-m", "bench.gpu_train", "--mnist", str(SHARED_MNIST), "--out", str(tmp_path),
               "--epochs", "1", "--train-subset", "1000"]
    cache = tmp_path / "jax-cache"
    entries = []
    for _ in range(2):
        result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout + result.stderr
        entries.append(sorted(path.name for path in cache.iterdir()))
    assert entries[0] and entries[1] == entries[0]
    summary = json.loads((tmp_path / "result.json").read_text())
    assert summary["device"] == "cpu" and summary["epochs"] == 1 and len(summary["epoch_seconds"]) == 1
    assert 0.3 < summary["test_accuracy"] <= 1 and (tmp_path / "model.keras").is_file()
    assert "test accuracy" in result.stdout and "s/epoch" in result.stdout
