"""The trainer on the Keras JAX backend (issue 15): a CPU run of the GPU path, its ONNX export under
TensorFlow, the GPU image and compose override, and the GPU check's Python half.

The JAX run is the real trainer CLI on 2,000 images for 1 epoch (1-2 minutes on 2 busy cores,
most of it JAX's CPU convolutions and the TensorFlow export process); the image test builds the
`trainer-gpu` stage without NVIDIA's libraries (the Dockerfile says why) and trains in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_MNIST, SHARED_MNIST_SHA256, run_trainer
from test_compose import docker_unavailable
from test_dockerfiles import compose_config, stage

from shared.model_store import KERAS_FILE, METADATA_FILE, ONNX_FILE, ModelStore
from trainer import backend, cli, precision
from trainer.export import PROBABILITY_TOLERANCE, QualityGateError, export_saved_model

JAX_SLICE = {"KERAS_BACKEND": "jax", "TRAIN_SUBSET": "2000", "EPOCHS": "1"}


@pytest.fixture(scope="module")
def jax_home(tmp_path_factory: pytest.TempPathFactory, mnist_http) -> tuple[Path, subprocess.CompletedProcess]:
    """A volume that the real trainer filled on the JAX backend (CPU)."""
    home = tmp_path_factory.mktemp("jax-home")
    result = run_trainer(home, mnist_http.url(), **JAX_SLICE)
    assert result.returncode == 0, f"trainer failed:\n{result.stdout}\n{result.stderr}"
    return home, result


@pytest.mark.slow
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


@pytest.mark.slow
def test_export_onnx_check_reports_accuracy_and_agreement_for_a_model_trained_elsewhere(jax_home, tmp_path):
    model = ModelStore(jax_home[0] / "mnist").version_dir(1) / KERAS_FILE
    result = subprocess.run(
        [sys.executable, "-m", "trainer.export_onnx", str(model), "--onnx", str(tmp_path / "m.onnx"),
         "--check", str(SHARED_MNIST)],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ONNX agrees on all 10000 labels" in result.stdout and (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.slow
def test_a_failed_export_stops_the_publish_with_the_reason(tmp_path):
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"not a keras file")
    with pytest.raises(QualityGateError, match="ONNX export under the TensorFlow backend failed"):
        export_saved_model(broken, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_an_unknown_backend_is_refused_before_training(tmp_path, mnist_http):
    result = run_trainer(tmp_path, mnist_http.url(), KERAS_BACKEND="theano")
    assert result.returncode == 2 and "KERAS_BACKEND='theano'" in result.stderr
    assert not (tmp_path / "mnist").exists()


@pytest.mark.parametrize(("setting", "capability", "expected"), [
    ("auto", (9, 0), "mixed_bfloat16"),  # H100/H200
    ("auto", (8, 0), "mixed_bfloat16"),  # A100
    ("auto", (7, 5), "float32"),  # T4: no bfloat16 tensor cores
    ("float32", (9, 0), "float32"),  # an explicit setting wins
])
def test_auto_precision_on_a_gpu_follows_its_compute_capability(setting, capability, expected):
    # The CPU text says AMX: on a GPU it must not matter.
    assert precision.resolve(setting, "flags : fpu amx_bf16", gpu_capability=capability) == expected
    assert precision.resolve("auto", "flags : fpu", gpu_capability=None) == "float32"


def test_select_sets_the_backend_and_the_compile_cache_before_keras_loads(monkeypatch, tmp_path):
    for name in ("KERAS_BACKEND", "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.setenv(name, "")  # so that monkeypatch removes what select() sets, even if it was unset
        monkeypatch.delenv(name)
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    backend.select("jax", tmp_path / "cache")
    assert os.environ["KERAS_BACKEND"] == "jax" and os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "cache")
    # Keras already loaded with another backend cannot switch: a clear error, not a silent wrong backend.
    loaded = types.SimpleNamespace(backend=types.SimpleNamespace(backend=lambda: "tensorflow"))
    monkeypatch.setitem(sys.modules, "keras", loaded)
    with pytest.raises(RuntimeError, match="already loaded with the tensorflow backend"):
        backend.select("jax")
    backend.select("tensorflow")


def test_library_versions_need_no_tensorflow(monkeypatch):
    real = cli.importlib.metadata.version

    def without_tensorflow(name: str) -> str:
        if name.startswith(("tensorflow", "tf2onnx")):
            raise cli.importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(cli.importlib.metadata, "version", without_tensorflow)
    versions = cli.library_versions()
    assert "tensorflow" not in versions and "tf2onnx" not in versions
    assert versions["keras"] == real("keras") and versions["jax"] == real("jax")


def test_the_gpu_override_runs_the_gpu_image_on_jax_with_one_nvidia_gpu():
    trainer = compose_config("docker-compose.yml", "docker-compose.gpu.yml")["services"]["trainer"]
    assert trainer["build"]["target"] == "trainer-gpu" and trainer["image"].endswith("-trainer-gpu:latest")
    assert trainer["environment"]["KERAS_BACKEND"] == "jax"
    device = trainer["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    # The default stack is untouched: TensorFlow, the CPU image, no device.
    plain = compose_config("docker-compose.yml")["services"]["trainer"]
    assert plain["environment"]["KERAS_BACKEND"] == "tensorflow" and "deploy" not in plain


def test_the_gpu_stage_is_last_and_adds_only_the_cuda_wheels():
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = [line.split(" AS ")[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
    # The classic builder builds every stage before the target: last, so no other target pulls 3 GB.
    assert stages[-2:] == ["trainer-gpu-deps", "trainer-gpu"]
    assert "FROM trainer-deps AS trainer-gpu-deps" in dockerfile
    assert "requirements/trainer-gpu.txt" in stage("trainer-gpu-deps")
    runtime = stage("trainer-gpu")
    assert runtime.startswith("COPY --from=trainer-gpu-deps /opt/venv /opt/venv") and "KERAS_BACKEND=jax" in runtime
    requirements = (ROOT / "requirements" / "trainer-gpu.txt").read_text().splitlines()
    assert "-r trainer.txt" in requirements
    assert {"jax-cuda12-plugin[with-cuda]==0.10.2", "jax-cuda12-pjrt==0.10.2"} <= set(requirements)
    assert "jax==0.10.2" in (ROOT / "requirements" / "trainer.txt").read_text().splitlines()


@pytest.mark.slow
def test_the_gpu_image_builds_and_trains_on_jax_where_no_gpu_is_given(tmp_path):
    if reason := docker_unavailable():
        pytest.fail(reason)
    tag = f"mnist-test-trainer-gpu:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        ["docker", "build", "-q", "--target", "trainer-gpu", "--build-arg", "CUDA_LIBRARIES=false", "-t", tag, "."],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o777)  # the image's user (uid 10001) writes the store
    try:
        run = subprocess.run(
            ["docker", "run", "--rm", "--network", "none",
             "-v", f"{SHARED_MNIST}:/mnist-src/mnist.npz:ro", "-v", f"{home}:/data",
             "-e", "MNIST_URL=/mnist-src/mnist.npz", "-e", f"MNIST_SHA256={SHARED_MNIST_SHA256}",
             "-e", "EPOCHS=1", "-e", "TRAIN_SUBSET=1000", "-e", "MIN_ACCURACY=0.3", tag],
            capture_output=True, text=True, timeout=900,
        )
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    metadata = json.loads((home / "mnist" / "1" / METADATA_FILE).read_text())
    assert metadata["backend"] == "jax" and metadata["device"] == "cpu"
    assert metadata["onnx_max_probability_difference"] <= PROBABILITY_TOLERANCE


@pytest.mark.slow
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
