"""Choosing the trainer's backend and precision, and the GPU image's static setup (issue 15), in-process:
no training, no Docker engine (the GPU image is built in tests/system/test_trainer_gpu_image.py)."""

from __future__ import annotations

import os
import sys
import types

import pytest
from conftest import ROOT
from helpers import stage

from trainer import backend, cli, precision


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
