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
MAX_IMAGE_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding them


class ImageError(ValueError):
    """The bytes are not an image we can turn into a digit; the message says why."""


def scale_pixels(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) pixels 0..255 -> (N, 28, 28, 1) float32 0..1, the model's input."""
    return (np.asarray(images, dtype=np.float32) / 255.0).reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)


def decode_image(data: bytes) -> Image.Image:
    """Decode PNG/JPEG/... bytes into a grayscale image, refusing huge or broken files."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"image is {width}x{height}; at most {MAX_IMAGE_PIXELS} pixels are accepted")
            image.load()
            image = ImageOps.exif_transpose(image)  # phone photos are often stored sideways plus an EXIF tag
    except ImageError:
        raise
    except UnidentifiedImageError:  # Pillow's own text names only an in-memory buffer object
        raise ImageError("not a decodable image (not PNG, JPEG, GIF, BMP, WebP or another format Pillow reads)"
                         ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"not a decodable image ({error})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise ImageError(f"corrupt or truncated image ({error})") from None
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _flatten_transparency(image.convert("RGBA"))
    return image.convert("L")


def _flatten_transparency(image: Image.Image) -> Image.Image:
    """A transparent drawing (a canvas export) on the background its ink stands out from.

    Where alpha is 0 there is no ink. Dark ink goes on white and light ink on black: on white
    alone, white strokes on a transparent canvas would vanish.
    """
    alpha = np.asarray(image.getchannel("A"), dtype=np.float64)
    brightness = np.asarray(image.convert("L"), dtype=np.float64)
    visible = alpha.sum()
    ink_is_light = visible > 0 and (brightness * alpha).sum() / visible > 127
    background = Image.new("RGBA", image.size, (0, 0, 0, 255) if ink_is_light else (255, 255, 255, 255))
    return Image.alpha_composite(background, image)


def image_to_mnist(data: bytes) -> np.ndarray:
    """Any image bytes -> (28, 28) uint8, white digit on black, centred like MNIST."""
    gray = np.asarray(decode_image(data), dtype=np.float32)
    if _border_level(gray) > 127:  # dark ink on light paper: MNIST is light ink on dark
        gray = 255.0 - gray
    # Grey paper or a dim photo: ink is what stands out from the background, not any non-black pixel.
    gray = np.clip(gray - _border_level(gray), 0.0, 255.0)
    ink = gray > INK_THRESHOLD
    if not ink.any():
        return np.zeros((IMAGE_SIDE, IMAGE_SIDE), dtype=np.uint8)
    rows, cols = np.nonzero(ink)
    digit = gray[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
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
