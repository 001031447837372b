"""Every route in-process (Flask's test client) over the real app with a stand-in model: the HTTP contract of
each wire format, the v2 versioned routes and binary bodies, ops routes, samples, errors and OpenAPI.

No training and no processes: the `app`/`client` fixtures (tests/conftest.py) serve versions 1 and 2 of
StandInModel, which labels an image by its number of full-white pixels (`standin_digit`).
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import orjson
import pytest
from conftest import SHARED_MNIST, assert_json_error, standin_digit, standin_digits, standin_loader
from helpers import encoded, npy, v2_binary
from PIL import Image

from server.app import create_app
from server.openapi import flask_rule_to_path
from server.pipeline import url_rules
from server.protocols import v2
from shared.config import Config
from shared.preprocess import mnist_to_png

DIGITS = standin_digits(3, 1, 4, 1, 5)
LABELS = [3, 1, 4, 1, 5]


# -- ops ----------------------------------------------------------------------------------------------

def test_health_readiness_and_models(client) -> None:
    assert client.get("/healthz").get_json() == {"status": "alive"}
    assert client.get("/readyz").get_json() == {"ready": True, "model_version": 2}
    models = client.get("/models").get_json()
    assert models["served_version"] == 2 and models["pinned"] is None and models["failed"] == []
    assert [v["version"] for v in models["versions"]] == [1, 2]
    assert models["versions"][0] == {"version": 1, "created": None, "test_accuracy": 0.9}
    assert models["metadata"] == {"version": 2, "test_accuracy": 0.9}


def test_unknown_routes_and_methods_answer_json(client) -> None:
    assert_json_error(client.get("/nope"), 404)
    response = client.get("/predict")
    assert_json_error(response, 405)
    assert "POST" in response.headers["Allow"]
    assert_json_error(client.get("/v1/models/other"), 404)
    assert_json_error(client.get("/v2/models/mnist/versions/x"), 404)


def test_openapi_documents_every_route(app, client) -> None:
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue  # files of the web page, not API
        routes.setdefault(flask_rule_to_path(rule.rule), set()).update(
            m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    for rule, methods in url_rules():  # the predict routes, answered ahead of Flask (server.pipeline)
        routes.setdefault(flask_rule_to_path(rule), set()).update(m.lower() for m in methods)
    assert {path: set(item) for path, item in document["paths"].items()} == routes
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "200" in operation["responses"], (path, method)
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= set(operation["responses"]), (path, method)
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path
    infer = document["paths"]["/v2/models/mnist/versions/{version}/infer"]["post"]
    assert "application/octet-stream" in infer["requestBody"]["content"]
    assert v2.HEADER_LENGTH in infer["responses"]["200"]["headers"]


# -- native and TF Serving ------------------------------------------------------------------------------

def test_predict_json_npy_and_multipart(client) -> None:
    answer = client.post("/predict", json={"instances": DIGITS.tolist()}).get_json()
    assert answer["model_version"] == 2 and [p["label"] for p in answer["predictions"]] == LABELS
    as_npy = client.post("/predict", data=npy(DIGITS), content_type="application/x-npy").get_json()
    assert [p["label"] for p in as_npy["predictions"]] == LABELS
    files = {"a": (io.BytesIO(mnist_to_png(DIGITS[0])), "a.png")}
    assert client.post("/predict", data=files, content_type="multipart/form-data").status_code == 200
    assert_json_error(client.post("/predict", data=b"1,2", content_type="text/csv"), 415, "Content-Type")
    assert_json_error(client.post("/predict", data=b"{nope", content_type="application/json"), 400, "JSON")


def test_tfserving_routes(client) -> None:
    available = {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert client.get("/v1/models/mnist").get_json() == {"model_version_status": [available]}
    assert client.get("/v1/models/mnist/versions/1").get_json()["model_version_status"][0]["version"] == "1"
    assert_json_error(client.get("/v1/models/mnist/versions/7"), 404, "version 7")
    assert client.get("/v1/models/mnist/versions/1/metadata").get_json()["model_spec"]["version"] == "1"
    # `curl -d` (TF Serving's docs) sends a form Content-Type: the body is still JSON.
    rows = client.post("/v1/models/mnist:predict", data=json.dumps({"instances": DIGITS.tolist()}),
                       content_type="application/x-www-form-urlencoded").get_json()["predictions"]
    assert np.argmax(rows, axis=1).tolist() == LABELS
    columnar = client.post("/v1/models/mnist/versions/1:predict", json={"inputs": DIGITS.tolist()}).get_json()
    assert np.argmax(columnar["outputs"], axis=1).tolist() == LABELS
    assert_json_error(client.post("/v1/models/mnist/versions/42:predict", json={"instances": DIGITS.tolist()}), 404)
    assert_json_error(client.post("/v1/models/mnist:predict", json={"signature_name": "x", "instances": [[0]]}), 404)


# -- Open Inference Protocol v2 ---------------------------------------------------------------------------

def test_v2_server_and_model_metadata_and_readiness(client) -> None:
    assert client.get("/v2").get_json() == {"name": "mnist-server", "version": v2.SERVER_VERSION,
                                            "extensions": ["binary_tensor_data"]}
    assert client.get("/v2/health/live").get_json() == {"live": True}
    assert client.get("/v2/health/ready").get_json() == {"ready": True}
    for prefix in ("/v2/models/mnist", "/v2/models/mnist/versions/1"):
        metadata = client.get(prefix).get_json()
        assert metadata["name"] == "mnist" and metadata["versions"] == ["1", "2"]
        assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 28, 28]}]
        assert client.get(prefix + "/ready").get_json() == {"name": "mnist", "ready": True}
    for path in ("/v2/models/mnist/versions/9", "/v2/models/mnist/versions/9/ready"):
        assert_json_error(client.get(path), 404, "version 9")
    assert_json_error(client.post("/v2/models/mnist/versions/9/infer", json={"inputs": []}), 400)


def test_v2_json_infer_on_the_served_and_a_numbered_version(client) -> None:
    request = {"id": "r1", "inputs": [{"name": "pixels", "shape": [5, 784], "datatype": "FP32",
                                       "data": DIGITS.reshape(5, 784).astype(float).tolist()}]}
    for path, version in (("/v2/models/mnist/infer", "2"), ("/v2/models/mnist/versions/1/infer", "1")):
        answer = client.post(path, data=json.dumps(request)).get_json()  # no Content-Type: still JSON
        assert answer["model_version"] == version and answer["id"] == "r1"
        probabilities, label = answer["outputs"]
        assert label["data"] == LABELS and probabilities["shape"] == [5, 10]
    request["inputs"][0]["shape"] = [5, 28, 28]
    assert_json_error(client.post("/v2/models/mnist/versions/9/infer", json=request), 404, "version 9")


def test_v2_binary_infer_in_and_out(client) -> None:
    body, headers = v2_binary(DIGITS)
    response = client.post("/v2/models/mnist/versions/2/infer", data=body, headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/octet-stream"
    length = int(response.headers[v2.HEADER_LENGTH])
    answer = orjson.loads(response.data[:length])
    assert answer["id"] == "b1" and [o["parameters"]["binary_data_size"] for o in answer["outputs"]] == [200, 40]
    raw = response.data[length:]
    probabilities = np.frombuffer(raw[:200], "<f4").reshape(5, 10)
    assert probabilities.argmax(axis=1).tolist() == LABELS
    assert np.frombuffer(raw[200:], "<i8").tolist() == LABELS
    body, headers = v2_binary(DIGITS, binary_out=False)
    plain = client.post("/v2/models/mnist/infer", data=body, headers=headers)
    assert plain.mimetype == "application/json" and v2.HEADER_LENGTH not in plain.headers
    assert plain.get_json()["outputs"][1]["data"] == LABELS


def test_v2_bytes_input_takes_png_photos(client) -> None:
    photo = Image.fromarray(255 - np.kron(standin_digit(9), np.ones((4, 4), np.uint8)))  # dark ink on white
    png = encoded(photo, "PNG")
    raw = len(png).to_bytes(4, "little") + png
    header = orjson.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(raw)}}]})
    response = client.post("/v2/models/mnist/infer", data=header + raw, headers={v2.HEADER_LENGTH: str(len(header))})
    assert response.status_code == 200, response.data
    assert response.get_json()["outputs"][1]["shape"] == [1]


def test_v2_malformed_binary_is_a_json_400(client) -> None:
    body, headers = v2_binary(DIGITS)
    assert_json_error(client.post("/v2/models/mnist/infer", data=body), 400, v2.HEADER_LENGTH)
    headers[v2.HEADER_LENGTH] = str(len(body) + 5)
    assert_json_error(client.post("/v2/models/mnist/infer", data=body, headers=headers), 400, "has only")


def test_v2_infer_is_answered_without_flask_and_keeps_its_contract(app, client, monkeypatch, caplog) -> None:
    """server/pipeline.py answers these POSTs ahead of Flask: no request context, yet a 405 for other
    methods, the same request metrics (labelled with Flask's rule), and an unexpected error as a logged JSON 500."""
    import flask
    from prometheus_client import REGISTRY

    from server.pipeline import V2_MODEL

    SERVED_RULE, VERSION_RULE = V2_MODEL + "/infer", V2_MODEL + "/versions/<int:version>/infer"

    plane = app.extensions["mnist"].plane
    contexts = []
    infer = plane.infer
    monkeypatch.setattr(plane, "infer", lambda request: contexts.append(flask.has_request_context()) or infer(request))
    def counts() -> list[float | None]:
        return [REGISTRY.get_sample_value(name, labels) for rule in (SERVED_RULE, VERSION_RULE)
                for name, labels in (("mnist_requests_total", {"protocol": "http", "method": "POST", "route": rule,
                                                           "status": "200"}),
                                     ("mnist_request_duration_seconds_count", {"protocol": "http", "route": rule}))]

    before = [count or 0.0 for count in counts()]
    body, headers = v2_binary(DIGITS)
    for path in ("/v2/models/mnist/infer", "/v2/models/mnist/versions/1/infer"):
        assert client.post(path, data=body, headers=headers).status_code == 200
        response = client.get(path)
        assert_json_error(response, 405)
        assert "POST" in response.headers["Allow"]
    assert contexts == [False, False]
    # One POST answered 200 per route; the latency histogram also timed the GET answered 405 on that route.
    assert counts() == [count + step for count, step in zip(before, (1, 2, 1, 2), strict=True)]
    assert_json_error(client.post("/v2/models/mnist/versions/" + "9" * 500 + "/infer", data=body, headers=headers), 404)

    def broken(_request):
        raise RuntimeError("a bug")

    monkeypatch.setattr(plane, "infer", broken)
    with caplog.at_level(logging.ERROR):
        assert_json_error(client.post("/v2/models/mnist/infer", data=body, headers=headers), 500,
                          "internal server error")
    assert "a bug" not in client.post("/v2/models/mnist/infer", data=body, headers=headers).get_data(as_text=True)
    assert any(record.exc_info and "a bug" in record.getMessage() for record in caplog.records)


# -- limits, auth -------------------------------------------------------------------------------------------

def test_batch_and_body_limits(client) -> None:
    too_many = np.zeros((65, 28, 28), np.uint8)
    assert_json_error(client.post("/predict", json={"instances": too_many.tolist()}), 400, "at most 64")
    body, headers = v2_binary(too_many)
    assert_json_error(client.post("/v2/models/mnist/infer", data=body, headers=headers), 400, "at most 64")


def test_prediction_routes_need_the_token_when_set(standin_home: Path) -> None:
    app = create_app(Config(home=standin_home, auth_token="s3cret"), loader=standin_loader)
    client = app.test_client()
    body, headers = v2_binary(DIGITS)
    for path in ("/v2/models/mnist/infer", "/v2/models/mnist/versions/1/infer"):
        response = client.post(path, data=body, headers=headers)
        assert_json_error(response, 401, "bearer")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        authorised = client.post(path, data=body, headers={**headers, "Authorization": "Bearer s3cret"})
        assert authorised.status_code == 200
    assert client.get("/v2/models/mnist/versions/1").status_code == 200  # metadata stays open
    app.extensions["mnist"].manager.stop()


# -- samples (the real MNIST files, the stand-in model) --------------------------------------------------------

def test_samples_list_and_wrong_only_use_the_served_model(client) -> None:
    with np.load(SHARED_MNIST) as mnist:
        labels = mnist["y_test"][:40]
    body = client.get("/samples?split=test&offset=5&limit=15").get_json()
    assert body["model_version"] == 2 and [s["index"] for s in body["samples"]] == list(range(5, 20))
    assert [s["label"] for s in body["samples"]] == labels[5:20].tolist()
    assert all(s["probability"] == pytest.approx(0.91) for s in body["samples"])
    wrong = client.get("/samples?wrong_only=true&limit=5").get_json()["samples"]
    assert len(wrong) == 5 and all(s["predicted"] != s["label"] for s in wrong)
    assert client.get("/samples/grid.png?count=4&cols=2").mimetype == "image/png"
