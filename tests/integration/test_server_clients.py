"""Real Open Inference Protocol v2 clients, unmodified, against real gunicorn serving the real trained model.

NVIDIA's `tritonclient.http` with its defaults (binary tensor data in and out) and with JSON, and
KServe's `InferenceRESTClient` (v2) with binary and JSON input: what other services use to call
model servers must work against ours without being told to switch off its defaults.
"""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from helpers import MIN_ACCURACY, first_test_digits

from shared.preprocess import mnist_to_png

COUNT = 64


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server):
    return start_module_server(trained_home)


@pytest.fixture(scope="module")
def digits(trained_home: Path) -> tuple[np.ndarray, np.ndarray]:
    return first_test_digits(trained_home / "datasets" / "mnist.npz", COUNT)


@pytest.fixture(scope="module")
def triton() -> ModuleType:
    # Imported here, not at the top: the clients take seconds to import, and `make test-fast` collects this file.
    return importlib.import_module("tritonclient.http")


@pytest.fixture(scope="module")
def client(server, triton) -> Any:
    return triton.InferenceServerClient(url=server.url.removeprefix("http://"))


def triton_input(triton: ModuleType, images: np.ndarray, datatype: str, binary: bool) -> Any:
    tensor = triton.InferInput("pixels", list(images.shape), datatype)
    tensor.set_data_from_numpy(images, binary_data=binary)
    return tensor


def test_tritonclient_health_and_metadata(client) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mnist") and client.is_model_ready("mnist", "1")
    assert not client.is_model_ready("mnist", "7")
    metadata = client.get_server_metadata()
    assert "binary_tensor_data" in metadata["extensions"]
    model = client.get_model_metadata("mnist", "1")
    assert model["versions"] == ["1"] and model["inputs"][0]["shape"] == [-1, 28, 28]


@pytest.mark.parametrize("version", ["", "1"], ids=["served", "version-1"])
def test_tritonclient_defaults_binary_in_and_out(triton, client, digits, version) -> None:
    images, labels = digits
    result = client.infer("mnist", [triton_input(triton, images, "UINT8", binary=True)], model_version=version,
                          request_id="t-1")
    assert result.get_response()["id"] == "t-1" and result.get_response()["model_version"] == "1"
    assert "parameters" in result.get_output("probabilities"), "the client's default asks for binary outputs"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (COUNT, 10)
    assert (result.as_numpy("label") == probabilities.argmax(axis=1)).all()
    assert (probabilities.argmax(axis=1) == labels).mean() > MIN_ACCURACY


def test_tritonclient_json_matches_binary(triton, client, digits) -> None:
    images, _labels = digits
    binary = client.infer("mnist", [triton_input(triton, images.astype(np.float32), "FP32", binary=True)])
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=False),
               triton.InferRequestedOutput("label", binary_data=False)]
    as_json = client.infer("mnist", [triton_input(triton, images, "UINT8", binary=False)], model_version="1",
                           outputs=outputs)
    assert "data" in as_json.get_output("probabilities")
    np.testing.assert_allclose(as_json.as_numpy("probabilities"), binary.as_numpy("probabilities"), atol=1e-6)
    assert (as_json.as_numpy("label") == binary.as_numpy("label")).all()


def test_tritonclient_bytes_input_of_png_images(triton, client, digits) -> None:
    images, labels = digits
    pngs = np.array([mnist_to_png(image, 3) for image in images[:16]], dtype=np.object_)
    tensor = triton.InferInput("images", [16], "BYTES")
    tensor.set_data_from_numpy(pngs)
    predicted = client.infer("mnist", [tensor]).as_numpy("label")
    assert (predicted == labels[:16]).mean() > MIN_ACCURACY - 0.1


def test_tritonclient_gets_the_servers_error_message(triton, client) -> None:
    with pytest.raises(triton.InferenceServerException, match="version 7 not found"):
        client.infer("mnist", [triton_input(triton, np.zeros((1, 28, 28), np.uint8), "UINT8", True)],
                     model_version="7")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_kserve_inference_rest_client(server, digits, binary) -> None:
    images, labels = digits
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def call():
        rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
        assert await rest.is_server_live(server.url) and await rest.is_model_ready(server.url, "mnist")
        tensor = InferInput("pixels", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary)
        return await rest.infer(server.url, InferRequest("mnist", [tensor], request_id="k-1"), model_name="mnist")

    response = asyncio.run(call())
    assert response.id == "k-1" and response.model_name == "mnist"  # (its parser drops model_version)
    outputs = {output.name: output.as_numpy() for output in response.outputs}
    assert outputs["probabilities"].shape == (COUNT, 10)
    assert (outputs["label"] == labels).mean() > MIN_ACCURACY
