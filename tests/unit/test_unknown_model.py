"""A request for a model this server does not serve (a client's default name, such as TF Serving's `model`) gets
a JSON 404 that names the served model and the route to use, in each protocol's error shape."""

from __future__ import annotations

import pytest

ZERO = [[0] * 28] * 28


def error_of(response, status: int = 404) -> dict:
    assert response.status_code == status and response.mimetype == "application/json", response.data[:300]
    return response.json
V2_BODY = {"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}


@pytest.mark.parametrize(("method", "path", "body", "route"), [
    ("POST", "/v1/models/model:predict", {"instances": [ZERO]}, "POST /v1/models/mnist:predict"),
    ("POST", "/v1/models/model/versions/1:predict", {"instances": [ZERO]}, "POST /v1/models/mnist:predict"),
    ("GET", "/v1/models/model", None, "POST /v1/models/mnist:predict"),
    ("POST", "/v2/models/model/infer", V2_BODY, "POST /v2/models/mnist/infer"),
    ("GET", "/v2/models/model/ready", None, "POST /v2/models/mnist/infer"),
    ("GET", "/v2/models/model", None, "POST /v2/models/mnist/infer"),
])
def test_an_unknown_model_name_is_a_404_naming_the_served_model_and_route(client, method, path, body, route) -> None:
    response = client.open(path, method=method, json=body)
    error = error_of(response)
    assert isinstance(error["error"], str)  # TF Serving's and v2's error body alike: {"error": "..."}
    for fragment in ("model 'model' not found", "serves the model 'mnist'", route):
        assert fragment in error["error"], error


def test_other_404s_keep_their_own_message(client) -> None:
    assert "serves the model" not in error_of(client.get("/no/such/page"))["error"]
    assert "serves the model" not in error_of(client.get("/v1/models/mnist/versions/99"))["error"]
