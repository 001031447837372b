"""Image preprocessing shared by the trainer, the server, the web page and the tests.

`scale_pixels` is the model's input convention (28x28x1 float32 in 0..1, pixels /255).
`image_to_mnist` turns an arbitrary photo or drawing into an MNIST-style digit the way the
MNIST creators did: grayscale, white ink on black, cropped to the digit, fitted into a
20x20 box keeping its aspect ratio, then placed in a 28x28 field so that its centre of
mass sits in the centre.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.image import IMAGE_SIDE

DIGIT_BOX = 20
INK_THRESHOLD = 30  # on 0..255 after inversion: fainter pixels count as background
# Decoding is bounded, because a few hundred bytes of PNG or lossless WebP can declare gigapixels.
# The output is a 20x20 digit; a digit drawn on a canvas or photographed is legible at a few hundred
# pixels, so anything larger only costs memory and CPU. 2048x2048 takes a full-screen canvas export or
# a scanned page; phone photos (12-50 megapixels) are JPEG, which draft() decodes at 1/2..1/8 scale
# straight from the file, so they are measured by the size they are decoded at, not the size stored.
MAX_IMAGE_PIXELS = 2048 * 2048
# Images larger than this on their longer side are shrunk by Pillow (reduce(): integer box averaging in
# uint8) before any numpy work, so the float arrays below stay small; smaller images are untouched.
WORK_SIDE = 1024
# Per request: the bytes Pillow may decode for all its images together (4 RGBA images at the pixel
# limit, 16 grayscale ones, thousands of phone-photo-sized JPEGs drafted down), bounding a request's CPU.
MAX_REQUEST_DECODED_BYTES = 64 * 2**20


class ImageError(ValueError):
    """The bytes are not an image we can turn into a digit; the message says why."""


class DecodeBudget:
    """The decoded bytes one request may still spend (`MAX_REQUEST_DECODED_BYTES`); one per request."""

    def __init__(self, limit: int = MAX_REQUEST_DECODED_BYTES) -> None:
        self.limit = limit
        self.spent = 0

    def spend(self, size: int) -> None:
        if self.spent + size > self.limit:
            raise ImageError(f"the request's images decode to more than {self.limit} bytes together "
                             f"(MAX_REQUEST_DECODED_BYTES); send fewer or smaller images")
        self.spent += size


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) pixels 0..255 -> (N, 28, 28, 1) float32 0..1, the model's input."""
    return (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)


def _open_bounded(data: bytes, budget: DecodeBudget | None) -> Image.Image:
    """Open and decode, refusing images over the pixel limit (or the request's budget) before decoding them."""
    image = Image.open(io.BytesIO(data))
    if image.format == "JPEG":
        image.draft(image.mode, (WORK_SIDE, WORK_SIDE))  # decode at 1/2, 1/4 or 1/8 scale when that is enough
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        side = int(MAX_IMAGE_PIXELS ** 0.5)
        raise ImageError(f"image is {width}x{height}; at most {MAX_IMAGE_PIXELS} pixels are accepted "
                         f"({side}x{side}, MAX_IMAGE_PIXELS)")
    if budget is not None:
        budget.spend(width * height * len(image.getbands()))
    image.load()
    # Phone photos are often stored sideways plus an EXIF tag. In place: otherwise an upright image (nearly all)
    # is copied whole, a full-size buffer per image that a client sending large images makes the server pay.
    ImageOps.exif_transpose(image, in_place=True)
    return image


def decode_image(data: bytes, budget: DecodeBudget | None = None) -> Image.Image:
    """Decode PNG/JPEG/... bytes into a grayscale image of at most WORK_SIDE a side, refusing huge or broken
    files; `budget` counts the decoded bytes against the request's."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = _open_bounded(data, budget)
    except ImageError:
        raise
    except UnidentifiedImageError:  # Pillow's own text names only an in-memory buffer object
        raise ImageError("not a decodable image (not PNG, JPEG, GIF, BMP, WebP or another format Pillow reads)"
                         ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"not a decodable image ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image ({error})") from None
    transparent = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    mode = "RGBA" if transparent else "L"
    if image.mode != mode:  # convert() to the mode it already has is a full-size copy
        image = image.convert(mode)
    if max(image.size) > WORK_SIDE:
        image = image.reduce(-(-max(image.size) // WORK_SIDE))  # Pillow averages RGBA premultiplied
    if transparent:
        image = _flatten_transparency(image).convert("L")
    return image


def _flatten_transparency(image: Image.Image) -> Image.Image:
    """A transparent drawing (a canvas export) on the background its ink stands out from.

    Where alpha is 0 there is no ink. Dark ink goes on white and light ink on black: on white
    alone, white strokes on a transparent canvas would vanish.
    """
    alpha = np.asarray(image.getchannel("A"))
    brightness = np.asarray(image.convert("L"))
    visible = int(alpha.sum(dtype=np.int64))
    # Integer sums (einsum buffers its casts): no image-sized float copies, and the same exact total.
    ink_is_light = visible > 0 and int(np.einsum("ij,ij->", brightness, alpha, dtype=np.int64)) / visible > 127
    background = Image.new("RGBA", image.size, (0, 0, 0, 255) if ink_is_light else (255, 255, 255, 255))
    return Image.alpha_composite(background, image)


def image_to_mnist(data: bytes, budget: DecodeBudget | None = None) -> np.ndarray:
    """Any image bytes -> (28, 28) uint8, white digit on black, centred like MNIST.

    uint8 until the digit is cropped out: only the crop (at most WORK_SIDE a side) becomes float."""
    gray = np.asarray(decode_image(data, budget))
    if _border_level(gray) > 127:  # dark ink on light paper: MNIST is light ink on dark
        gray = 255 - gray
    # Grey paper or a dim photo: ink is what stands out from the background, not any non-black pixel.
    level = _border_level(gray)
    ink = gray > INK_THRESHOLD + level
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if not len(rows):
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    crop = gray[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    digit = np.clip(crop.astype(np.float32) - np.float32(level), 0.0, 255.0)
    digit *= 255.0 / digit.max()  # MNIST strokes peak at full white, however faint the pencil was
    return _centre_by_mass(_fit_into_box(digit))


def _border_level(gray: np.ndarray) -> float:
    """The background's brightness: the median of the outermost pixels (robust to ink touching the edge)."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border))


def _fit_into_box(digit: np.ndarray) -> np.ndarray:
    height, width = digit.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(np.clip(digit, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.float32)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    field = np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.float32)
    height, width = digit.shape
    total = digit.sum()
    if total > 0:
        row_mass = (digit.sum(axis=1) * np.arange(height)).sum() / total
        col_mass = (digit.sum(axis=0) * np.arange(width)).sum() / total
    else:
        row_mass, col_mass = height / 2, width / 2
    top = round(IMAGE_SIDE / 2 - row_mass)
    left = round(IMAGE_SIDE / 2 - col_mass)
    top = min(max(top, 0), IMAGE_SIDE - height)
    left = min(max(left, 0), IMAGE_SIDE - width)
    field[top: top + height, left: left + width] = digit
    return np.clip(field, 0, 255).astype(np.uint8)


def mnist_to_png(pixels: np.ndarray, scale: int = 1) -> bytes:
    """(28, 28) uint8 -> PNG bytes, enlarged `scale` times without smoothing."""
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8), mode="L")
    if scale > 1:
        image = ImageOps.scale(image, scale, resample=Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
