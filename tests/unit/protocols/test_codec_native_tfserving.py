"""The native /predict and TF Serving codecs in-process: every body form, every shape, the errors."""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson
import pytest
from helpers import npy, png_b64

from server.errors import ApiError, InputError, NotFound
from server.protocols import native, tfserving
from server.protocols.common import InferRequest, InferResult
from shared.preprocess import image_to_mnist, mnist_to_png

LIMIT = 64
RNG = np.random.default_rng(3)
IMAGES = RNG.integers(0, 256, (4, 28, 28), dtype=np.uint8)
ZERO = [[0] * 28 for _ in range(28)]


def multipart(*files: tuple[str, str, bytes], boundary: str = "XyZ") -> tuple[bytes, str]:
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n" for field, name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# -- native -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 784), (4, 28, 28, 1)])
@pytest.mark.parametrize("form", ["json", "npy"])
def test_native_json_and_npy_in_every_shape(shape, form) -> None:
    images = IMAGES.reshape(shape)
    if form == "json":
        decoded = native.decode(json.dumps({"instances": images.tolist()}).encode(), "application/json", LIMIT)
    else:
        decoded = native.decode(npy(images.astype(np.float32)), "application/x-npy", LIMIT)
    assert decoded.pixels.dtype == np.float32
    np.testing.assert_array_equal(decoded.pixels, IMAGES)


def test_native_fractional_and_boolean_free_bodies_keep_their_values() -> None:
    # Integer bodies take common.byte_array's fast path; one fraction at the very end sends the batch back to
    # numpy, and a "true" elsewhere in the text skips the fast path: both must give the same pixels.
    images = IMAGES.astype(np.float32)
    images[-1, -1, -1] = 0.5
    rows = images.tolist()
    rows[-1][-1][-1] = 0.5
    decoded = native.decode(json.dumps({"instances": rows}).encode(), "application/json", LIMIT)
    np.testing.assert_array_equal(decoded.pixels, images)
    body = json.dumps({"instances": IMAGES.tolist(), "note": True}).encode()
    np.testing.assert_array_equal(native.decode(body, "application/json", LIMIT).pixels, IMAGES)


def test_native_mixed_instances_and_multipart_in_order() -> None:
    mixed = [IMAGES[0].tolist(), IMAGES[1].ravel().tolist(), {"b64": png_b64(IMAGES[2])}]
    decoded = native.decode(json.dumps({"instances": mixed}).encode(), "application/json; charset=utf-8", LIMIT)
    np.testing.assert_array_equal(decoded.pixels[:2], IMAGES[:2])
    np.testing.assert_array_equal(decoded.pixels[2], image_to_mnist(mnist_to_png(IMAGES[2], 3)))
    pngs = [mnist_to_png(image) for image in IMAGES[:3]]
    body, content_type = multipart(("a", "1.png", pngs[0]), ("b", "2.png", pngs[1]), ("a", "3.png", pngs[2]))
    pixels = native.decode(body, content_type, LIMIT).pixels
    np.testing.assert_array_equal(pixels, np.stack([image_to_mnist(png) for png in pngs]))


def test_native_answer() -> None:
    probabilities = np.array([[0.05] * 9 + [0.55]], np.float32)
    body, headers = native.encode(InferResult(2, probabilities), InferRequest(np.zeros((1, 28, 28), np.float32)))
    assert headers["Content-Type"] == "application/json"
    answer = orjson.loads(body)
    assert answer["model_version"] == 2 and answer["predictions"][0]["label"] == 9
    np.testing.assert_allclose(answer["predictions"][0]["probabilities"], probabilities[0])


NATIVE_JSON_ERRORS = [
    ({"instances": []}, "non-empty"),
    ({"images": [ZERO]}, "instances"),
    ({"instances": ZERO}, "instances"),
    ({"instances": [[[0] * 27] * 28]}, "shape"),
    ({"instances": [ZERO, [0] * 783]}, "shape"),
    ({"instances": [[[0] * 28] * 27 + [[0] * 27]]}, "instances"),
    ({"instances": [[["0"] * 28] * 28]}, "strings"),
    ({"instances": [[[True] * 28] * 28]}, "booleans"),
    ({"instances": [[[None] * 28] * 28]}, "non-numeric"),
    ({"instances": [[[-1] * 28] * 28]}, "between 0 and 255"),
    ({"instances": [[[256] * 28] * 28]}, "between 0 and 255"),
    ({"instances": [[[10**30] * 28] * 28]}, "instances"),
    ({"instances": [ZERO] * 65}, "at most 64"),
    ({"instances": [{"b64": "not base64!"}]}, "base64"),
    ({"instances": [{"b64": base64.b64encode(b"GIF89a not really").decode()}]}, "image"),
    ({"instances": [{"b64": 3}]}, "b64"),
    ({"instances": [{"url": "http://x"}]}, "b64"),
    ({"instances": ["abc"]}, "instances"),
    ([ZERO], "object"),
    ("instances", "object"),
]


@pytest.mark.parametrize(("body", "fragment"), NATIVE_JSON_ERRORS, ids=[str(i) for i in range(len(NATIVE_JSON_ERRORS))])
def test_native_bad_json_bodies(body, fragment) -> None:
    with pytest.raises(InputError) as raised:
        native.decode(json.dumps(body).encode(), "application/json", LIMIT)
    assert fragment.lower() in raised.value.message.lower(), raised.value.message


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"{not json", "not valid JSON"),
    (b'{"instances": [[NaN]]}', "NaN and Infinity"),
    (b'{"instances": [[-Infinity]]}', "NaN and Infinity"),
    (b"\xff\xfe\x00", "not valid JSON"),
    (b"[" * 100000, "not valid JSON"),
])
def test_native_unparsable_json(raw, fragment) -> None:
    with pytest.raises(InputError, match=fragment):
        native.decode(raw, "application/json", LIMIT)


@pytest.mark.parametrize(("data", "fragment"), [
    (b"garbage", "npy"),
    (npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "npy"),
    (npy(np.zeros((2, 28, 27), np.uint8)), "shape"),
    (npy(np.zeros((28, 28), np.uint8)), "shape"),
    (npy(np.full((1, 28, 28), np.nan, np.float32)), "nan"),
    (npy(np.full((1, 28, 28), 300, np.int32)), "between 0 and 255"),
    (npy(np.zeros((1, 28, 28), np.complex64)), "0..255"),
])
def test_native_bad_npy(data, fragment) -> None:
    with pytest.raises(InputError) as raised:
        native.decode(data, "application/x-npy", LIMIT)
    assert fragment.lower() in raised.value.message.lower()


def test_native_bad_multipart_and_content_types() -> None:
    body, content_type = multipart(("f", "x.png", b"not an image"))
    with pytest.raises(InputError, match=r"x\.png"):
        native.decode(body, content_type, LIMIT)
    with pytest.raises(InputError, match="boundary"):
        native.decode(body, "multipart/form-data", LIMIT)
    with pytest.raises(InputError, match="no image files"):
        native.decode(b"--XyZ\r\nContent-Disposition: form-data; name=\"t\"\r\n\r\nv\r\n--XyZ--\r\n",
                      "multipart/form-data; boundary=XyZ", LIMIT)
    for content_type in ("text/csv", "application/x-www-form-urlencoded", None):
        with pytest.raises(ApiError) as raised:
            native.decode(b"1,2", content_type, LIMIT)
        assert raised.value.status == 415


# -- TF Serving --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "form"), [
    ({"instances": IMAGES.tolist()}, "predictions"),
    ({"signature_name": "serving_default", "instances": IMAGES.reshape(4, 784).tolist()}, "predictions"),
    ({"inputs": IMAGES.tolist()}, "outputs"),
    ({"inputs": {"pixels": IMAGES.reshape(4, 28, 28, 1).tolist()}}, "outputs"),
])
def test_tfserving_row_and_columnar(body, form) -> None:
    decoded = tfserving.decode(json.dumps(body).encode(), LIMIT, 3)
    assert decoded.form == form and decoded.version == 3
    np.testing.assert_array_equal(decoded.pixels, IMAGES)
    probabilities = np.eye(10, dtype=np.float32)[:4]
    answer = orjson.loads(tfserving.encode(InferResult(3, probabilities), decoded)[0])
    assert list(answer) == [form]
    np.testing.assert_array_equal(answer[form], probabilities)


@pytest.mark.parametrize(("body", "error", "fragment"), [
    ({"instances": [ZERO], "inputs": [ZERO]}, InputError, "exactly one"),
    ({}, InputError, "exactly one"),
    ({"inputs": {"x": [ZERO]}}, InputError, "pixels"),
    ({"instances": [[[-0.5] * 28] * 28]}, InputError, "between 0 and 255"),
    ({"signature_name": "other", "instances": [ZERO]}, NotFound, "signature_name"),
    ([ZERO], InputError, "object"),
])
def test_tfserving_errors(body, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        tfserving.decode(json.dumps(body).encode(), LIMIT)


def test_tfserving_status_and_metadata_bodies() -> None:
    status = tfserving.model_status([2], {3: "broken"})["model_version_status"]
    assert status[0] == {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert status[1]["state"] == "END" and status[1]["status"]["error_message"] == "broken"
    metadata = tfserving.metadata(2)
    assert metadata["model_spec"] == {"name": "mnist", "signature_name": "", "version": "2"}
