"""Preprocessing: real MNIST digits, drawn the way users send them, come back as MNIST digits."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from conftest import SHARED_MNIST
from helpers import encoded
from PIL import Image

from shared.preprocess import MAX_IMAGE_PIXELS, ImageError, image_to_mnist, mnist_to_png, scale_pixels

DIGITS = 10  # the first ten test digits: 7 2 1 0 4 1 4 9 5 9
CANVAS = (640, 480)
MIN_CORRELATION = 0.85  # typical is ~0.97; a one-pixel-off centring still scores ~0.9


@pytest.fixture(scope="module")
def test_digits() -> np.ndarray:
    with np.load(SHARED_MNIST) as archive:
        return archive["x_test"][:DIGITS]


def on_paper(digit: np.ndarray) -> Image.Image:
    """The digit 10x larger, dark ink on white paper, well off the centre of a 640x480 page."""
    big = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR)
    page = Image.new("L", CANVAS, 255)
    page.paste(big, (330, 40))
    return page


def as_png(digit: np.ndarray) -> bytes:
    return encoded(on_paper(digit), "PNG")


def as_jpeg(digit: np.ndarray) -> bytes:
    return encoded(on_paper(digit).convert("RGB"), "JPEG", quality=85)


def as_transparent_png(digit: np.ndarray) -> bytes:
    # A canvas export: black ink whose alpha is the ink, fully transparent elsewhere.
    rgba = np.zeros((CANVAS[1], CANVAS[0], 4), np.uint8)
    rgba[..., 3] = 255 - np.asarray(on_paper(digit))
    return encoded(Image.fromarray(rgba, "RGBA"), "PNG")


def as_white_ink_transparent_png(digit: np.ndarray) -> bytes:
    # A canvas export with white strokes: white ink whose alpha is the ink, fully transparent elsewhere.
    rgba = np.full((CANVAS[1], CANVAS[0], 4), 255, np.uint8)
    rgba[..., 3] = 255 - np.asarray(on_paper(digit))
    return encoded(Image.fromarray(rgba, "RGBA"), "PNG")


def as_grey_paper_photo(digit: np.ndarray) -> bytes:
    # Faint grey pencil (60 below the paper) on mid-grey paper: low contrast, no pure white or black.
    page = np.asarray(on_paper(digit), dtype=np.float32)
    return encoded(Image.fromarray((100 + page * 60 / 255).astype(np.uint8)), "JPEG", quality=90)


def as_sideways_photo(digit: np.ndarray) -> bytes:
    # Stored rotated a quarter turn, with the EXIF orientation tag (6) that tells viewers to turn it back.
    exif = Image.Exif()
    exif[0x0112] = 6
    return encoded(on_paper(digit).transpose(Image.Transpose.ROTATE_90).convert("RGB"), "JPEG", exif=exif)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Pixel correlation, allowing the centring to differ by one pixel (rounding of the centre of mass)."""
    a, b = a.astype(np.float64), b.astype(np.float64).ravel()
    return max(
        float(np.corrcoef(np.roll(a, (dy, dx), axis=(0, 1)).ravel(), b)[0, 1])
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


@pytest.mark.parametrize("render", [as_png, as_jpeg, as_transparent_png, as_white_ink_transparent_png,
                                    as_grey_paper_photo, as_sideways_photo])
def test_a_large_off_centre_dark_on_light_digit_comes_back_as_the_mnist_digit(test_digits, render):
    for index, digit in enumerate(test_digits):
        result = image_to_mnist(render(digit))
        assert result.shape == (28, 28) and result.dtype == np.uint8
        scores = [similarity(result, original) for original in test_digits]
        assert scores[index] > MIN_CORRELATION, f"digit {index}: correlation {scores[index]:.3f}"
        # Nearest neighbour among the ten originals is the digit itself, not just any similar stroke.
        assert int(np.argmax(scores)) == index, f"digit {index} looks most like digit {np.argmax(scores)}"


def test_light_ink_on_dark_is_not_inverted(test_digits):
    # Already MNIST-style (white on black), e.g. a digit sent back from the gallery.
    result = image_to_mnist(mnist_to_png(test_digits[0], scale=8))
    assert similarity(result, test_digits[0]) > MIN_CORRELATION


@pytest.mark.parametrize("colour", [0, 255, 128])
def test_a_blank_image_gives_zeros(colour):
    blank = encoded(Image.new("L", (200, 100), colour), "PNG")
    assert not image_to_mnist(blank).any()


def test_mnist_to_png_round_trips_and_enlarges(test_digits):
    png = mnist_to_png(test_digits[3], scale=4)
    with Image.open(io.BytesIO(png)) as image:
        assert image.size == (112, 112)
        assert np.array_equal(np.asarray(image)[::4, ::4], test_digits[3])


def test_scale_pixels_is_the_models_input_convention(test_digits):
    scaled = scale_pixels(test_digits)
    assert scaled.shape == (DIGITS, 28, 28, 1) and scaled.dtype == np.float32
    assert scaled.max() == 1.0 and scaled.min() == 0.0
    assert np.allclose(scaled[..., 0] * 255, test_digits)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""
    png = bytearray(encoded(Image.new("L", (1, 1)), "PNG"))
    ihdr_data = 16  # 8-byte signature, 4-byte length, b"IHDR"
    png[ihdr_data: ihdr_data + 8] = struct.pack(">II", width, height)
    png[ihdr_data + 13: ihdr_data + 17] = struct.pack(">I", zlib.crc32(bytes(png[ihdr_data - 4: ihdr_data + 13])))
    return bytes(png)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "not a decodable image"),
        (b"GIF89a but not really" + bytes(100), "image"),
        (bytes(range(256)) * 4, "not a decodable image"),
        (png_declaring(5000, 5000), f"at most {MAX_IMAGE_PIXELS} pixels"),  # under Pillow's own limit
        (png_declaring(100_000, 100_000), "not a decodable image"),  # Pillow's bomb check refuses it
    ],
    ids=["empty", "fake-gif", "noise", "25-megapixel-png", "10-gigapixel-png"],
)
def test_undecodable_or_huge_images_are_image_errors(data, expected):
    with pytest.raises(ImageError, match=expected) as caught:
        image_to_mnist(data)
    assert " object at 0x" not in str(caught.value)  # no Python object reprs in what clients read


def test_a_truncated_image_is_an_image_error(test_digits):
    for data in (as_png(test_digits[0]), as_jpeg(test_digits[0])):
        with pytest.raises(ImageError, match="corrupt or truncated"):
            image_to_mnist(data[: len(data) // 2])
