"""A grid of digits like the notebook's `show_images`: each cell titled with index, truth (t) and prediction (p)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

SCALE = 3
CELL = 28 * SCALE
TITLE = 16
PAD = 6
COLUMN = CELL + 20  # room for a title like "#59999 t:7 p:1" wider than the digit
WRONG = (220, 30, 30)
RIGHT = (20, 20, 20)


def render_grid(images: np.ndarray, indexes: list[int], labels: list[int], predicted: list[int] | None,
                cols: int) -> bytes:
    """PNG bytes; wrong predictions get a red title and a red frame."""
    count = len(images)
    rows = max(1, -(-count // cols))
    width = cols * (COLUMN + PAD) + PAD
    height = rows * (CELL + TITLE + PAD) + PAD
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(12)
    for position in range(count):
        left = PAD + (position % cols) * (COLUMN + PAD)
        top = PAD + (position // cols) * (CELL + TITLE + PAD)
        title = f"#{indexes[position]} t:{labels[position]}"
        colour = RIGHT
        if predicted is not None:
            title += f" p:{predicted[position]}"
            if predicted[position] != labels[position]:
                colour = WRONG
        draw.text((left, top), title, fill=colour, font=font)
        digit = ImageOps.scale(Image.fromarray(images[position], mode="L"), SCALE, Image.Resampling.NEAREST)
        canvas.paste(digit.convert("RGB"), (left, top + TITLE))
        if colour == WRONG:
            draw.rectangle((left - 2, top + TITLE - 2, left + CELL + 1, top + TITLE + CELL + 1), outline=WRONG, width=2)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()
