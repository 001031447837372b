"""Malformed input that used to reach a 500 with a traceback: each is a 400 saying what is wrong (issue 23)."""

from __future__ import annotations

import io

import numpy as np
import orjson
from conftest import assert_json_error
from helpers import npy

V2_INFER = "/v2/models/mnist/infer"
PIXELS = {"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": [0] * 784}


def test_unhashable_output_name_is_a_400(client):
    body = {"inputs": [PIXELS], "outputs": [{"name": ["probabilities"]}]}
    assert_json_error(client.post(V2_INFER, json=body), 400, "outputs", "name")


def test_non_ascii_digit_in_the_header_length_is_a_400(client):
    body = orjson.dumps({"inputs": [PIXELS]})
    response = client.post(V2_INFER, data=body, content_type="application/json",
                           headers={"Inference-Header-Content-Length": "\u00b2"})
    assert_json_error(response, 400, "Inference-Header-Content-Length")


def test_bytes_data_nested_deep_is_a_400(client):
    nested = "[" * 1000 + '"aGVsbG8="' + "]" * 1000  # orjson reads up to 1024 levels; Python recursion stops at 1000
    body = b'{"inputs": [{"name": "pixels", "datatype": "BYTES", "shape": [1], "data": ' + nested.encode() + b"}]}"
    assert_json_error(client.post(V2_INFER, data=body, content_type="application/json"), 400, "nested")


def _npy_declaring(shape: tuple[int, ...]) -> bytes:
    """A .npy file whose header declares `shape` (uint8) but holds no data: 128 bytes of header."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\0"


def test_npy_declaring_more_values_than_it_holds_is_a_400(client):
    body = _npy_declaring((2**20, 2**20))  # 2^40 values in a 129-byte body
    assert len(body) < 200
    response = client.post("/predict", data=body, content_type="application/x-npy")
    assert_json_error(response, 400, "declares", str(2**40))


def test_npy_that_holds_what_it_declares_still_predicts(client):
    response = client.post("/predict", data=npy(np.zeros((2, 28, 28), np.uint8)), content_type="application/x-npy")
    assert response.status_code == 200, response.data
    assert len(response.get_json()["predictions"]) == 2
