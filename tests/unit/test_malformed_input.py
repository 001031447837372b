"""Malformed input that used to reach a 500 with a traceback: each is a 400 saying what is wrong (issue 23)."""

from __future__ import annotations

import io

import numpy as np
import orjson

V2_INFER = "/v2/models/mnist/infer"
PIXELS = {"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": [0] * 784}


def _error(response, *fragments: str) -> str:
    assert response.status_code == 400, (response.status_code, response.data[:300])
    message = response.get_json()["error"]
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_unhashable_output_name_is_a_400(client):
    body = {"inputs": [PIXELS], "outputs": [{"name": ["probabilities"]}]}
    _error(client.post(V2_INFER, json=body), "outputs", "name")


def test_non_ascii_digit_in_the_header_length_is_a_400(client):
    body = orjson.dumps({"inputs": [PIXELS]})
    response = client.post(V2_INFER, data=body, content_type="application/json",
                           headers={"Inference-Header-Content-Length": "\u00b2"})
    _error(response, "Inference-Header-Content-Length")


def test_bytes_data_nested_deep_is_a_400(client):
    nested = "[" * 1000 + '"aGVsbG8="' + "]" * 1000  # orjson reads up to 1024 levels; Python recursion stops at 1000
    body = b'{"inputs": [{"name": "pixels", "datatype": "BYTES", "shape": [1], "data": ' + nested.encode() + b"}]}"
    _error(client.post(V2_INFER, data=body, content_type="application/json"), "nested")


def _npy_declaring(shape: tuple[int, ...]) -> bytes:
    """A .npy file whose header declares `shape` (uint8) but holds no data: 128 bytes of header."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0"


def test_npy_declaring_more_values_than_it_holds_is_a_400(client):
    body = _npy_declaring((2**20, 2**20))  # 2^40 values in a 129-byte body
    assert len(body) < 200
    response = client.post("/predict", data=body, content_type="application/x-npy")
    _error(response, "declares", str(2**40))


def test_npy_that_holds_what_it_declares_still_predicts(client):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 28, 28), np.uint8))
    response = client.post("/predict", data=buffer.getvalue(), content_type="application/x-npy")
    assert response.status_code == 200, response.data
    assert len(response.get_json()["predictions"]) == 2
