"""The Open Inference Protocol v2 codec in-process: JSON and binary tensor data, every datatype, every malformed
combination a 400 that says what is wrong. Plain bytes in and out, no Flask, no model."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import orjson
import pytest

from server.errors import InputError
from server.protocols import common, v2
from server.protocols.common import InferRequest, InferResult, RequestedOutput, byte_array, may_hold_booleans
from shared.preprocess import image_to_mnist, mnist_to_png

LIMIT = 64
RNG = np.random.default_rng(12)
IMAGES = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
IMAGES[:, :4] = 0  # keep room around the digit so the PNG round trip is stable


def binary_body(header: dict, *chunks: bytes) -> tuple[bytes, str]:
    """How tritonclient builds a binary request: the JSON, then each input's raw bytes; header = JSON length."""
    text = json.dumps(header).encode()
    return text + b"".join(chunks), str(len(text))


def tensor(array: np.ndarray, datatype: str, binary: bool, name: str = "pixels") -> tuple[dict, bytes]:
    entry = {"name": name, "shape": list(array.shape), "datatype": datatype}
    if binary:
        raw = array.astype(v2.NUMERIC[datatype]).tobytes()
        entry["parameters"] = {"binary_data_size": len(raw)}
        return entry, raw
    entry["data"] = array.ravel().tolist()
    return entry, b""


def decode_json(request: dict, version: int | None = None) -> InferRequest:
    return v2.decode(json.dumps(request).encode(), None, LIMIT, version)


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


# -- valid requests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("datatype", list(v2.NUMERIC))
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("shape", [(3, 28, 28), (3, 784), (3, 28, 28, 1)])
def test_every_numeric_datatype_and_shape_decodes_to_the_same_pixels(datatype, binary, shape) -> None:
    images = IMAGES // 2 if datatype == "INT8" else IMAGES  # INT8 holds 0..127
    entry, raw = tensor(images.reshape(shape), datatype, binary)
    body, header = binary_body({"inputs": [entry]}, raw) if binary else (json.dumps({"inputs": [entry]}).encode(), None)
    decoded = v2.decode(body, header, LIMIT)
    assert decoded.pixels.dtype == np.float32 and decoded.pixels.shape == (3, 28, 28)
    np.testing.assert_array_equal(decoded.pixels, images.astype(np.float32))


def test_nested_json_data_and_request_fields() -> None:
    decoded = decode_json({"id": "req-7", "parameters": {"priority": 2, "custom": "x"},
                           "inputs": [{"name": "pixels", "shape": [3, 28, 28], "datatype": "FP32",
                                       "data": IMAGES.astype(float).tolist()}],
                           "outputs": [{"name": "label"}]}, version=4)
    assert decoded.id == "req-7" and decoded.version == 4 and decoded.parameters["priority"] == 2
    assert decoded.outputs == (RequestedOutput("label", False),)
    np.testing.assert_array_equal(decoded.pixels, IMAGES)


def test_binary_data_is_read_in_place_without_copying_the_body() -> None:
    entry, raw = tensor(IMAGES.astype(np.float32), "FP32", True)
    body, header = binary_body({"inputs": [entry]}, raw)
    pixels = v2.decode(body, header, LIMIT).pixels
    assert np.shares_memory(pixels, np.frombuffer(body, np.uint8)), "FP32 binary input should be a view of the body"


def test_bytes_inputs_hold_encoded_images_in_json_and_binary() -> None:
    pngs = [mnist_to_png(image, scale=2) for image in IMAGES]
    expected = np.stack([image_to_mnist(png) for png in pngs]).astype(np.float32)
    as_json = decode_json({"inputs": [{"name": "images", "shape": [3], "datatype": "BYTES",
                                       "data": [base64.b64encode(png).decode() for png in pngs]}]})
    np.testing.assert_array_equal(as_json.pixels, expected)
    as_b64_objects = decode_json({"inputs": [{"name": "images", "shape": [3, 1], "datatype": "BYTES",
                                              "data": [[{"b64": base64.b64encode(png).decode()}] for png in pngs]}]})
    np.testing.assert_array_equal(as_b64_objects.pixels, expected)
    raw = length_prefixed(*pngs)
    body, header = binary_body({"inputs": [{"name": "images", "shape": [3], "datatype": "BYTES",
                                            "parameters": {"binary_data_size": len(raw)}}]}, raw)
    np.testing.assert_array_equal(v2.decode(body, header, LIMIT).pixels, expected)


def test_json_and_binary_inputs_mixed_in_one_request_join_in_order() -> None:
    first, _ = tensor(IMAGES[:1], "UINT8", False, "a")
    second, raw2 = tensor(IMAGES[1:2], "FP16", True, "b")
    png = mnist_to_png(IMAGES[2])
    raw3 = length_prefixed(png)
    third = {"name": "c", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw3)}}
    body, header = binary_body({"inputs": [first, second, third]}, raw2, raw3)
    pixels = v2.decode(body, header, LIMIT).pixels
    assert pixels.shape == (3, 28, 28)
    np.testing.assert_array_equal(pixels[:2], IMAGES[:2])
    np.testing.assert_array_equal(pixels[2], image_to_mnist(png))


def test_requested_outputs_follow_binary_data_output_and_per_output_flags() -> None:
    entry, _ = tensor(IMAGES[:1], "UINT8", False)
    every = decode_json({"inputs": [entry]})
    assert every.outputs == (RequestedOutput("probabilities"), RequestedOutput("label"))
    binary = decode_json({"inputs": [entry], "parameters": {"binary_data_output": True}})
    assert all(output.binary for output in binary.outputs) and len(binary.outputs) == 2
    mixed = decode_json({"inputs": [entry], "parameters": {"binary_data_output": True},
                         "outputs": [{"name": "label", "parameters": {"binary_data": False}},
                                     {"name": "probabilities"}]})
    assert mixed.outputs == (RequestedOutput("label", False), RequestedOutput("probabilities", True))


# -- answers ----------------------------------------------------------------------------------------

PROBABILITIES = np.array([[0.05] * 9 + [0.55], [0.55] + [0.05] * 9], np.float32)


def test_json_answer_echoes_id_and_carries_every_requested_output() -> None:
    request = InferRequest(np.zeros((2, 28, 28), np.float32), None,
                           (RequestedOutput("label"), RequestedOutput("probabilities")), {}, "abc")
    body, headers = v2.encode(InferResult(3, PROBABILITIES), request)
    assert headers == {"Content-Type": "application/json"}
    answer = orjson.loads(body)
    assert answer["model_name"] == "mnist" and answer["model_version"] == "3" and answer["id"] == "abc"
    label, probabilities = answer["outputs"]
    assert label == {"name": "label", "datatype": "INT64", "shape": [2], "data": [9, 0]}
    assert probabilities["datatype"] == "FP32" and probabilities["shape"] == [2, 10]
    np.testing.assert_allclose(np.array(probabilities["data"]).reshape(2, 10), PROBABILITIES)


def test_binary_answer_is_json_then_little_endian_bytes_with_the_header_length() -> None:
    request = InferRequest(np.zeros((2, 28, 28), np.float32), None,
                           (RequestedOutput("probabilities", True), RequestedOutput("label", False)))
    body, headers = v2.encode(InferResult(1, PROBABILITIES), request)
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers[v2.HEADER_LENGTH])
    answer = orjson.loads(body[:length])
    probabilities, label = answer["outputs"]
    assert probabilities["parameters"] == {"binary_data_size": 80} and "data" not in probabilities
    assert label["data"] == [9, 0]
    np.testing.assert_array_equal(np.frombuffer(body[length:], "<f4").reshape(2, 10), PROBABILITIES)


# -- malformed requests: each a 400 that says what is wrong -------------------------------------------

def _ok_binary() -> tuple[dict, bytes]:
    return tensor(IMAGES[:1], "UINT8", True)


def _case_header_past_body():
    entry, raw = _ok_binary()
    body, _ = binary_body({"inputs": [entry]}, raw)
    return body, str(len(body) + 1), "has only"


def _case_size_past_body():
    entry, raw = _ok_binary()
    entry["parameters"]["binary_data_size"] = 2000
    return (*binary_body({"inputs": [entry]}, raw), "runs past the end")


def _case_size_not_shape():
    entry, raw = _ok_binary()
    entry["shape"] = [2, 28, 28]
    return (*binary_body({"inputs": [entry]}, raw), "does not match shape")


def _case_missing_header():
    entry, raw = _ok_binary()
    body, _ = binary_body({"inputs": [entry]}, raw)
    return body, None, "Inference-Header-Content-Length"


def _case_binary_size_without_header_json_only():
    entry, _ = _ok_binary()
    return json.dumps({"inputs": [entry]}).encode(), None, "no Inference-Header-Content-Length"


def _case_extra_bytes():
    entry, raw = _ok_binary()
    return (*binary_body({"inputs": [entry]}, raw, b"\0\0"), "2 bytes follow")


def _case_header_not_a_number():
    entry, raw = _ok_binary()
    body, _ = binary_body({"inputs": [entry]}, raw)
    return body, "12abc", "non-negative integer"


def _case_header_cuts_json():
    entry, raw = _ok_binary()
    body, header = binary_body({"inputs": [entry]}, raw)
    return body, str(int(header) - 3), "not valid JSON"


def _case_both_data_and_binary():
    entry, raw = _ok_binary()
    entry["data"] = [0] * 784
    return (*binary_body({"inputs": [entry]}, raw), "both data and")


def _case_bytes_prefix_too_long():
    raw = struct.pack("<I", 5000) + b"\x89PNG"
    entry = {"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    return (*binary_body({"inputs": [entry]}, raw), "only 4 left")


def _case_bytes_count_wrong():
    raw = length_prefixed(mnist_to_png(IMAGES[0]))
    entry = {"name": "x", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    return (*binary_body({"inputs": [entry]}, raw), "needs 2 values")


def _case_bytes_cut_length():
    raw = b"\x01\x00"
    entry = {"name": "x", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 2}}
    return (*binary_body({"inputs": [entry]}, raw), "4-byte length")


def _case_binary_nan():
    array = np.full((1, 28, 28), np.nan, np.float32)
    entry, raw = tensor(array, "FP32", True)
    return (*binary_body({"inputs": [entry]}, raw), "NaN")


def _case_binary_out_of_range():
    entry, raw = tensor(np.full((1, 28, 28), 300), "INT16", True)
    return (*binary_body({"inputs": [entry]}, raw), "between 0 and 255")


BINARY_CASES = [_case_header_past_body, _case_size_past_body, _case_size_not_shape, _case_missing_header,
                _case_binary_size_without_header_json_only, _case_extra_bytes, _case_header_not_a_number,
                _case_header_cuts_json, _case_both_data_and_binary, _case_bytes_prefix_too_long,
                _case_bytes_count_wrong, _case_bytes_cut_length, _case_binary_nan, _case_binary_out_of_range]


@pytest.mark.parametrize("case", BINARY_CASES, ids=[case.__name__[6:] for case in BINARY_CASES])
def test_malformed_binary_requests_say_what_is_wrong(case) -> None:
    body, header, fragment = case()
    with pytest.raises(InputError) as raised:
        v2.decode(body, header, LIMIT)
    assert raised.value.status == 400
    assert fragment.lower() in raised.value.message.lower(), raised.value.message


def _json_tensor(**changes) -> dict:
    return {"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784, **changes}]}


JSON_CASES = [
    ({}, "inputs"),
    ({"inputs": []}, "non-empty"),
    ({"inputs": [1]}, "object"),
    ({"inputs": [{"name": "pixels"}]}, "lacks"),
    ({"inputs": [{"name": "p", "shape": [1, 784], "datatype": "UINT8"}]}, "lacks data"),
    ({"inputs": [{"name": 3, "shape": [1, 784], "datatype": "UINT8", "data": [0] * 784}]}, "name"),
    (_json_tensor(datatype="BOOL"), "datatype must be one of"),
    (_json_tensor(shape=[1, 28, 27]), "needs 756 values"),
    (_json_tensor(shape=[2, 28, 28]), "needs 1568"),
    (_json_tensor(shape=[1, 28, 28.5]), "shape"),
    (_json_tensor(shape="1,28,28"), "shape"),
    (_json_tensor(shape=[True, 784]), "shape"),
    (_json_tensor(shape=[1, 14, 56]), "shape"),
    (_json_tensor(shape=[0, 28, 28], data=[]), "no images"),
    (_json_tensor(shape=[65, 28, 28], data=[0] * 784 * 65), "at most 64"),
    (_json_tensor(data=[0.5] * 784), "integers"),
    (_json_tensor(data=[300] * 784), "between 0 and 255"),
    (_json_tensor(data=[200] * 784, datatype="INT8"), "does not fit INT8"),
    (_json_tensor(data=["a"] * 784), "strings"),
    # The integer fast path (common.byte_array) takes all of these up to the last value, then refuses it.
    (_json_tensor(data=[True] * 784), "booleans"),
    (_json_tensor(data=[0] * 783 + [0.5]), "integers"),
    (_json_tensor(data=[0] * 783 + [1e2]), "integers"),
    (_json_tensor(data=[0] * 783 + [256]), "between 0 and 255"),
    (_json_tensor(data=[0] * 783 + [-1]), "between 0 and 255"),
    (_json_tensor(data=[0] * 783 + [None]), "non-numeric"),
    (_json_tensor(data=[0] * 783 + ["7"]), "strings"),
    (_json_tensor(parameters=[1]), "parameters must be an object"),
    (_json_tensor(parameters={"binary_data_size": -1}), "binary_data_size"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}, "base64"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(b"GIF8").decode()]}]},
     "image"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [5]}]}, "base64 string"),
    ({"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["AAAA"]}]}, "needs 2 values"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": "AAAA"}]}, "must be a list"),
    ({**_json_tensor(), "outputs": [{"name": "logits"}]}, "unknown outputs"),
    ({**_json_tensor(), "outputs": [{"name": "label"}, {"name": "label"}]}, "more than once"),
    ({**_json_tensor(), "outputs": "label"}, "outputs"),
    ({**_json_tensor(), "outputs": [{"name": "label", "parameters": {"binary_data": "yes"}}]}, "binary_data"),
    ({**_json_tensor(), "parameters": {"binary_data_output": 1}}, "binary_data_output"),
    ({**_json_tensor(), "parameters": "x"}, "parameters"),
    ({**_json_tensor(), "id": 5}, "id"),
    ([1, 2], "object"),
]


@pytest.mark.parametrize(("request_body", "fragment"), JSON_CASES, ids=[str(i) for i in range(len(JSON_CASES))])
def test_malformed_json_requests_say_what_is_wrong(request_body, fragment) -> None:
    with pytest.raises(InputError) as raised:
        decode_json(request_body)
    assert fragment.lower() in raised.value.message.lower(), raised.value.message


@pytest.mark.parametrize("raw", [b"{not json", b'{"inputs": [NaN]}', b"\xff\xfe", b"[" * 5000, b""])
def test_unparsable_bodies_are_400(raw) -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        v2.decode(raw, None, LIMIT)


def test_integer_lists_take_the_bytes_fast_path_and_anything_else_does_not() -> None:
    assert byte_array([0, 7, 255]).dtype == np.uint8 and byte_array([0, 7, 255]).tolist() == [0, 7, 255]
    nested = IMAGES.tolist()
    assert byte_array(nested).shape == (3, 28, 28) and np.array_equal(byte_array(nested), IMAGES)
    assert byte_array([[[1], [2]], [[3], [4]]]).shape == (2, 2, 1)
    for refused in ([], [0, 256], [0, -1], [0, 1.0], [0, "1"], [0, None], (0, 1), "01",
                    [[0, 1], [2]], [[0, 1], 2], [[0, 1], [2, [3]]], [[[0]], [1]], [[0, 1], "ab"], [[], []],
                    [[0, 1], {"a": 1, "b": 2}], [[0, 1.5]]):
        assert byte_array(refused) is None, refused
    assert byte_array([True, False]).tolist() == [1, 0]  # why the JSON text is checked for true/false first


@pytest.mark.parametrize(("text", "has"), [
    (b'{"name": "pixels", "datatype": "UINT8", "data": [0, 1]}', False),
    (b'{"name": "pixels", "data": [0, true]}', True),
    (b'{"data": [false, 1], "shape": [2]}', True),
    (b'{"id": "untrue", "data": [0]}', True),  # a word in a string only costs the fast path, never correctness
    (b'{"data": [' + b", ".join([b"1e-05"] * (common._E_LOOKS + 5)) + b', true]}', True),
    (b'{"data": [' + b", ".join([b"1e-05"] * (common._E_LOOKS + 5)) + b"]}", False),
])
def test_json_text_is_checked_for_booleans_before_the_fast_path(text, has) -> None:
    assert may_hold_booleans(text) is has
    assert may_hold_booleans(text + b"true", len(text)) is has  # only the JSON part counts, not binary data after it


def test_values_after_a_true_in_another_field_still_decode() -> None:
    entry, _ = tensor(IMAGES, "UINT8", binary=False)
    decoded = decode_json({"id": "true", "inputs": [entry], "parameters": {"note": False}})
    np.testing.assert_array_equal(decoded.pixels, IMAGES.astype(np.float32))


def test_batch_limit_is_checked_before_any_image_is_decoded() -> None:
    request = {"inputs": [{"name": "x", "shape": [65], "datatype": "BYTES", "data": ["not an image"] * 65}]}
    with pytest.raises(InputError, match="at most 64"):
        decode_json(request)


def test_metadata_bodies() -> None:
    assert v2.server_metadata()["extensions"] == ["binary_tensor_data"]
    metadata = v2.model_metadata([1, 3], "onnxruntime_onnx")
    assert metadata["versions"] == ["1", "3"] and [o["name"] for o in metadata["outputs"]] == ["probabilities", "label"]
