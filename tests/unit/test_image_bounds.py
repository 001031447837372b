"""Bounded image decoding (issue 23, item 3): a pixel limit per image, a decoded-bytes budget per request,
and decoding to 28x28 without full-size float copies. Memory is asserted with tracemalloc (numpy's arrays
are traced; Pillow's own buffers are bounded by the pixel limit), never with wall time."""

from __future__ import annotations

import base64
import tracemalloc
from pathlib import Path

import numpy as np
from conftest import assert_json_error
from helpers import encoded
from PIL import Image

from shared.preprocess import MAX_IMAGE_PIXELS, image_to_mnist

BOMB = (Path(__file__).parent / "data" / "blank-4096x4096-rgba-lossless.webp").read_bytes()  # 702 bytes
MIB = 2**20


def _photo(size: tuple[int, int], image_format: str = "JPEG") -> bytes:
    """A dark digit-like stroke on light grey paper, `size` pixels (a phone photo of a written digit)."""
    page = Image.new("RGB", size, (200, 200, 195))
    stroke = Image.new("RGB", (size[0] // 12, size[1] // 3), (30, 30, 30))
    page.paste(stroke, (size[0] // 2, size[1] // 3))
    return encoded(page, image_format, **({"quality": 90} if image_format == "JPEG" else {}))


def _peak_mib(data: bytes) -> tuple[np.ndarray, float]:
    tracemalloc.start()
    try:
        result = image_to_mnist(data)
        return result, tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def test_the_pixel_limit_fits_digits_and_photos_of_them():
    assert MAX_IMAGE_PIXELS <= 2048 * 2048


def test_a_tiny_webp_declaring_4096x4096_rgba_is_refused_naming_the_limit(client):
    assert len(BOMB) < 1024
    image = base64.b64encode(BOMB).decode()
    response = client.post("/predict", json={"instances": [{"b64": image}]})
    assert_json_error(response, 400, "4096x4096", f"at most {MAX_IMAGE_PIXELS} pixels")


def test_a_large_png_decodes_without_full_size_copies():
    data = _photo((2000, 1500), "PNG")  # no draft() for PNG: decoded at full size, then reduced by Pillow
    result, peak = _peak_mib(data)
    assert result.shape == (28, 28) and result.max() == 255
    assert peak < 6, f"{peak:.1f} MiB traced for one 2000x1500 PNG (a float32 copy alone is 11.4 MiB)"


def test_a_12_megapixel_jpeg_photo_is_accepted_and_decoded_small():
    data = _photo((4032, 3024))  # over the pixel limit as stored; JPEG's draft() decodes it at a fraction
    result, peak = _peak_mib(data)
    assert result.max() == 255
    assert peak < 6, f"{peak:.1f} MiB traced for one 12-megapixel JPEG"


def test_a_transparent_canvas_export_is_flattened_without_float64_copies():
    rgba = np.zeros((2048, 2048, 4), np.uint8)
    rgba[600:1400, 900:1100, 3] = 255  # black ink, transparent elsewhere
    result, peak = _peak_mib(encoded(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert result.max() == 255
    assert peak < 8, f"{peak:.1f} MiB traced for one 2048x2048 RGBA PNG (a float64 copy alone is 32 MiB)"


def test_images_at_the_limit_are_never_copied_whole(monkeypatch):
    """An upright image already in the mode it is worked in (a canvas export) is not copied at full size: a
    client posting images at the pixel limit otherwise makes every worker pay one more full-size buffer each."""
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    copied: list[tuple[str, tuple[int, int]]] = []
    copy = Image.Image.copy

    def counted(image: Image.Image) -> Image.Image:
        copied.append((image.mode, image.size))
        return copy(image)

    monkeypatch.setattr(Image.Image, "copy", counted)
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[600:1400, 900:1100, 3] = 255
    for data in (encoded(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True),
                 encoded(Image.new("L", (side, side)), "PNG")):
        image_to_mnist(data)
    assert not [entry for entry in copied if entry[1] == (side, side)], copied


def test_a_request_past_the_decoded_bytes_budget_is_refused(client):
    from shared.preprocess import MAX_REQUEST_DECODED_BYTES

    big = encoded(Image.new("RGBA", (2048, 2048), (255, 255, 255, 255)), "PNG")  # 16 MiB decoded, 16 KB sent
    count = MAX_REQUEST_DECODED_BYTES // (2048 * 2048 * 4) + 1
    image = base64.b64encode(big).decode()
    response = client.post("/predict", json={"instances": [{"b64": image}] * count})
    assert response.status_code == 400, response.data
    assert f"{MAX_REQUEST_DECODED_BYTES}" in response.get_json()["error"]
    within = client.post("/predict", json={"instances": [{"b64": image}] * (count - 1)})
    assert within.status_code == 200, within.data
