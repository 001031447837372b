"""The `trainer-gpu` image builds and trains on JAX where no GPU is given (a real Docker engine).

It is built without NVIDIA's libraries (the Dockerfile says why) and trains on a slice of MNIST."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from conftest import ROOT, SHARED_MNIST, SHARED_MNIST_SHA256
from test_compose import docker_unavailable

from shared.model_store import METADATA_FILE
from trainer.export import PROBABILITY_TOLERANCE


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
