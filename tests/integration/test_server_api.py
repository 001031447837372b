"""The prediction server over real HTTP against real gunicorn, with the model the real trainer wrote.

One server (two workers, like production) over real MNIST serves the whole module: real digits
predicted well above chance through every wire format, metrics across workers, no TensorFlow in
an ONNX worker. Each route's HTTP contract and every malformed body are tested in-process
(tests/unit/test_server_routes.py, tests/unit/protocols/); tests that change the store or the settings
live in the other test_server_* modules.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import assert_json_error, promtool_problems
from helpers import encoded, first_test_digits, npy, png_b64
from PIL import Image

from shared.preprocess import mnist_to_png

DIGITS = 200


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server):
    return start_module_server(trained_home, WEB_CONCURRENCY="2", THREADS="2")


@pytest.fixture(scope="module")
def digits(trained_home: Path) -> tuple[np.ndarray, np.ndarray]:
    return first_test_digits(trained_home / "datasets" / "mnist.npz", DIGITS)


def post_json(server, path: str, body) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=30)


def labels_of(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:300]
    return np.array([p["label"] for p in response.json()["predictions"]])


# -- ops ---------------------------------------------------------------------------------------

def test_health_and_readiness(server) -> None:
    assert requests.get(server.url + "/healthz", timeout=5).json() == {"status": "alive"}
    assert requests.get(server.url + "/readyz", timeout=5).json() == {"ready": True, "model_version": 1}


def test_models_reports_the_served_version_and_its_metadata(server, trained_home: Path) -> None:
    body = requests.get(server.url + "/models", timeout=5).json()
    assert body["served_version"] == 1 and body["pinned"] is None and body["failed"] == []
    assert body["versions"] == [{"version": 1, "created": body["metadata"]["created"],
                                 "test_accuracy": body["metadata"]["test_accuracy"]}]
    on_disk = json.loads((trained_home / "mnist" / "1" / "metadata.json").read_text())
    assert body["metadata"] == on_disk


# -- native /predict ---------------------------------------------------------------------------

def test_predict_json_real_digits_well_above_chance(server, digits) -> None:
    images, labels = digits
    response = post_json(server, "/predict", {"instances": images.tolist()})
    body = response.json()
    assert body["model_version"] == 1
    predicted = labels_of(response)
    assert (predicted == labels).mean() > 0.8
    probabilities = np.array([p["probabilities"] for p in body["predictions"]])
    assert probabilities.shape == (DIGITS, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert (probabilities.argmax(axis=1) == predicted).all()


def test_predict_accepts_784_and_28x28x1_and_mixed_instances(server, digits) -> None:
    images = digits[0][:10]
    expected = labels_of(post_json(server, "/predict", {"instances": images.tolist()}))
    flat = labels_of(post_json(server, "/predict", {"instances": images.reshape(10, 784).tolist()}))
    channel = labels_of(post_json(server, "/predict", {"instances": images.reshape(10, 28, 28, 1).tolist()}))
    mixed = [images[0].tolist(), images[1].ravel().tolist(), {"b64": png_b64(images[2])}]
    assert (flat == expected).all() and (channel == expected).all()
    assert labels_of(post_json(server, "/predict", {"instances": mixed}))[:2].tolist() == expected[:2].tolist()


def test_predict_b64_png_images_go_through_mnist_preprocessing(server, digits) -> None:
    images, labels = digits
    response = post_json(server, "/predict", {"instances": [{"b64": png_b64(image)} for image in images[:50]]})
    assert (labels_of(response) == labels[:50]).mean() > 0.7


def test_predict_multipart_files_in_order(server, digits) -> None:
    images, labels = digits
    jpeg = encoded(Image.fromarray(255 - images[1]).resize((112, 112)), "JPEG")  # dark ink on white paper
    files = [("first", ("a.png", mnist_to_png(images[0], 3), "image/png")),
             ("second", ("b.jpg", jpeg, "image/jpeg")),
             ("first", ("c.png", mnist_to_png(images[2], 1), "image/png"))]
    response = requests.post(server.url + "/predict", files=files, timeout=30)
    assert labels_of(response).tolist() == labels[:3].tolist()


def test_predict_npy_matches_json(server, digits) -> None:
    images = digits[0][:32]
    expected = labels_of(post_json(server, "/predict", {"instances": images.tolist()}))
    for array in (images, images.reshape(32, 784), images.reshape(32, 28, 28, 1).astype(np.float32)):
        response = requests.post(server.url + "/predict", data=npy(array),
                                 headers={"Content-Type": "application/x-npy"}, timeout=30)
        assert (labels_of(response) == expected).all()


# -- TensorFlow Serving REST -------------------------------------------------------------------

def test_tfserving_status_and_metadata(server) -> None:
    available = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                           "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(server.url + "/v1/models/mnist", timeout=5).json() == available
    assert requests.get(server.url + "/v1/models/mnist/versions/1", timeout=5).json() == available
    assert_json_error(requests.get(server.url + "/v1/models/mnist/versions/7", timeout=5), 404, "version 7")
    for path in ("/v1/models/mnist/metadata", "/v1/models/mnist/versions/1/metadata"):
        metadata = requests.get(server.url + path, timeout=5).json()
        assert metadata["model_spec"] == {"name": "mnist", "signature_name": "", "version": "1"}
        signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
        assert list(signature["inputs"]) == ["pixels"] and list(signature["outputs"]) == ["probabilities"]
    assert_json_error(requests.get(server.url + "/v1/models/mnist/versions/7/metadata", timeout=5), 404)


def test_tfserving_predict_instances_and_inputs(server, digits) -> None:
    images, labels = digits[0][:20], digits[1][:20]
    for path in ("/v1/models/mnist:predict", "/v1/models/mnist/versions/1:predict"):
        rows = post_json(server, path, {"signature_name": "serving_default", "instances": images.tolist()})
        predictions = np.array(rows.json()["predictions"])
        assert predictions.shape == (20, 10)
        columnar = np.array(post_json(server, path, {"inputs": images.tolist()}).json()["outputs"])
        named = np.array(post_json(server, path, {"inputs": {"pixels": images.tolist()}}).json()["outputs"])
        np.testing.assert_allclose(columnar, predictions, atol=1e-6)
        np.testing.assert_allclose(named, predictions, atol=1e-6)
        assert (predictions.argmax(axis=1) == labels).mean() > 0.7


# -- KServe v2 ---------------------------------------------------------------------------------

def test_v2_health_and_model_metadata(server) -> None:
    assert requests.get(server.url + "/v2/health/live", timeout=5).json() == {"live": True}
    assert requests.get(server.url + "/v2/health/ready", timeout=5).json() == {"ready": True}
    assert requests.get(server.url + "/v2/models/mnist/ready", timeout=5).json() == {"name": "mnist", "ready": True}
    metadata = requests.get(server.url + "/v2/models/mnist", timeout=5).json()
    assert metadata["name"] == "mnist" and metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"][0]["shape"] == [-1, 28, 28]


def test_v2_infer_uint8_flat_and_fp32_nested(server, digits) -> None:
    images, labels = digits[0][:16], digits[1][:16]
    flat = {"id": "req-1", "inputs": [{"name": "pixels", "shape": [16, 28, 28], "datatype": "UINT8",
                                       "data": images.ravel().tolist()}]}
    answer = post_json(server, "/v2/models/mnist/infer", flat).json()
    assert answer["model_name"] == "mnist" and answer["model_version"] == "1" and answer["id"] == "req-1"
    output, labels_output = answer["outputs"]  # no "outputs" asked: every output
    assert labels_output["name"] == "label" and labels_output["shape"] == [16]
    assert output["name"] == "probabilities" and output["datatype"] == "FP32" and output["shape"] == [16, 10]
    probabilities = np.array(output["data"]).reshape(16, 10)
    assert (probabilities.argmax(axis=1) == labels).mean() > 0.7
    nested = {"inputs": [{"name": "pixels", "shape": [16, 784], "datatype": "FP32",
                          "data": images.reshape(16, 784).astype(float).tolist()}],
              "outputs": [{"name": "label"}, {"name": "probabilities"}]}
    label_output, probability_output = post_json(server, "/v2/models/mnist/infer", nested).json()["outputs"]
    assert label_output == {"name": "label", "shape": [16], "datatype": "INT64",
                            "data": probabilities.argmax(axis=1).tolist()}
    np.testing.assert_allclose(np.array(probability_output["data"]).reshape(16, 10), probabilities, atol=1e-6)


# -- samples -----------------------------------------------------------------------------------

def test_samples_list_with_predictions(server, digits) -> None:
    body = requests.get(server.url + "/samples", params={"split": "test", "offset": 5, "limit": 15}, timeout=30).json()
    assert {k: body[k] for k in ("split", "offset", "limit", "total", "model_version", "next_offset")} == {
        "split": "test", "offset": 5, "limit": 15, "total": 10000, "model_version": 1, "next_offset": 20}
    assert [s["index"] for s in body["samples"]] == list(range(5, 20))
    assert [s["label"] for s in body["samples"]] == digits[1][5:20].tolist()
    first = body["samples"][0]
    assert first["image_url"] == "/samples/test/5.png" and first["pixels_url"] == "/samples/test/5.json"
    assert 0 < first["probability"] <= 1 and 0 <= first["predicted"] <= 9
    default = requests.get(server.url + "/samples", timeout=30).json()
    assert default["split"] == "test" and len(default["samples"]) == 15
    end = requests.get(server.url + "/samples?split=train&offset=59990&limit=50", timeout=30).json()
    assert len(end["samples"]) == 10 and end["next_offset"] is None and end["total"] == 60000
    past = requests.get(server.url + "/samples?offset=99999999999999999999", timeout=30).json()
    assert past["samples"] == [] and past["offset"] == 10000 and past["next_offset"] is None


def test_samples_wrong_only_scans_forward(server) -> None:
    body = requests.get(server.url + "/samples?split=test&offset=100&limit=7&wrong_only=true", timeout=60).json()
    wrong = body["samples"]
    assert len(wrong) == 7 and all(s["predicted"] != s["label"] for s in wrong)
    assert all(s["index"] >= 100 for s in wrong) and body["next_offset"] == wrong[-1]["index"] + 1
    following = requests.get(server.url + f"/samples?offset={body['next_offset']}&limit=3&wrong_only=1",
                             timeout=60).json()
    assert following["samples"][0]["index"] > wrong[-1]["index"]


def test_sample_png_and_json_round_trip_through_predict(server, digits) -> None:
    images, labels = digits
    png = requests.get(server.url + "/samples/test/3.png", timeout=10)
    assert png.headers["Content-Type"] == "image/png"
    assert (np.asarray(Image.open(io.BytesIO(png.content))) == images[3]).all()
    big = Image.open(io.BytesIO(requests.get(server.url + "/samples/test/3.png?scale=10", timeout=10).content))
    assert big.size == (280, 280)
    sample = requests.get(server.url + "/samples/test/3.json", timeout=10).json()
    assert sample["split"] == "test" and sample["index"] == 3 and sample["label"] == labels[3]
    assert (np.array(sample["pixels"]) == images[3]).all()
    predicted = post_json(server, "/predict", {"instances": [sample["pixels"]]}).json()["predictions"][0]["label"]
    listed = requests.get(server.url + "/samples?offset=3&limit=1", timeout=10).json()["samples"][0]
    assert predicted == listed["predicted"]


def test_samples_grid_png(server) -> None:
    response = requests.get(server.url + "/samples/grid.png?split=train&offset=0&count=15&cols=5", timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
    grid = Image.open(io.BytesIO(response.content))
    narrow = Image.open(io.BytesIO(requests.get(server.url + "/samples/grid.png?count=4&cols=2", timeout=30).content))
    assert grid.width > narrow.width and grid.height > narrow.height
    pixels = np.asarray(requests_grid_with_mistakes(server))
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert red.any(), "a wrong prediction must be marked in red"


def requests_grid_with_mistakes(server) -> Image.Image:
    wrong = requests.get(server.url + "/samples?wrong_only=true&limit=1", timeout=60).json()["samples"][0]
    url = f"{server.url}/samples/grid.png?split=test&offset={wrong['index']}&count=1&cols=1"
    return Image.open(io.BytesIO(requests.get(url, timeout=30).content)).convert("RGB")


@pytest.mark.parametrize(("path", "status", "fragment"), [
    ("/samples?split=valid", 400, "split"),
    ("/samples?offset=-1", 400, "offset"),
    ("/samples?offset=abc", 400, "integer"),
    ("/samples?limit=0", 400, "limit"),
    ("/samples?limit=101", 400, "limit"),
    ("/samples?limit=1.5", 400, "integer"),
    ("/samples?wrong_only=maybe", 400, "wrong_only"),
    ("/samples/valid/1.png", 404, "split"),
    ("/samples/test/abc.png", 400, "integer"),
    ("/samples/test/-1.png", 400, "index"),
    ("/samples/test/1e3.json", 400, "integer"),
    ("/samples/test/10000.png", 404, "out of range"),
    ("/samples/train/60000.json", 404, "out of range"),
    ("/samples/test/99999999999999999999999.json", 404, "out of range"),
    ("/samples/test/9999999999999999999999999999999999.json", 400, "between"),
    ("/samples/test/1.png?scale=0", 400, "scale"),
    ("/samples/test/1.png?scale=21", 400, "scale"),
    ("/samples/grid.png?cols=0", 400, "cols"),
    ("/samples/grid.png?count=101", 400, "count"),
    ("/samples/grid.png?split=x", 400, "split"),
])
def test_sample_errors(server, path, status, fragment) -> None:
    assert_json_error(requests.get(server.url + path, timeout=10), status, fragment)


# -- metrics, OpenAPI, no TensorFlow -------------------------------------------------------------

def test_metrics_aggregate_both_workers(server) -> None:
    for _ in range(6):
        requests.get(server.url + "/healthz", timeout=5)
    assert requests.post(server.url + "/predict", json={"instances": []}, timeout=5).status_code == 400
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert re.search(r'mnist_requests_total\{method="GET",protocol="http",route="/healthz",status="200"\} (\d+)', text)
    assert 'mnist_requests_total{method="POST",protocol="http",route="/predict",status="400"}' in text
    assert 'mnist_request_duration_seconds_bucket{le="0.005",protocol="http",route="/predict"}' in text
    assert re.search(r"mnist_inference_batch_size_count \d+", text)
    served = re.findall(r'mnist_model_served_version\{pid="(\d+)"\} 1\.0', text)
    assert len(set(served)) == 2, f"expected a served-version gauge per worker:\n{text}"
    assert "mnist_model_reloads_total 0.0" in text


def test_metrics_of_every_worker_pass_promtool(server) -> None:
    post_json(server, "/predict", {"instances": [[[0] * 28] * 28]})
    assert promtool_problems(requests.get(server.url + "/metrics", timeout=5).content) == ""


def _process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid] + [grandchild for child in children for grandchild in _process_tree(int(child))]


def test_onnx_server_never_loads_tensorflow(server, digits) -> None:
    post_json(server, "/predict", {"instances": digits[0][:2].tolist()})
    requests.get(server.url + "/samples/grid.png", timeout=30)
    processes = _process_tree(server.process.pid)
    assert len(processes) == 3  # master + 2 workers
    for pid in processes:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "tensorflow" not in maps, f"process {pid} mapped TensorFlow"
        if pid != server.process.pid:
            assert "onnxruntime" in maps, f"worker {pid} has no ONNX Runtime: is it serving at all?"


def test_no_request_above_made_a_500(server) -> None:
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert not re.search(r'status="5\d\d"', text), [line for line in text.splitlines() if 'status="5' in line]
    assert "Traceback" not in server.log()
