"""MNIST sample images with the served model's predictions: list, single PNG/JSON, and a titled grid."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request

from server.errors import NotFound
from server.grid import render_grid
from server.params import bool_arg, int_arg, to_int
from server.services import services
from shared.preprocess import mnist_to_png

bp = Blueprint("samples", __name__)
MAX_LIMIT = 100
MAX_GRID = 100
MAX_COLS = 20
MAX_SCALE = 20


def _split_arg(default: str) -> str:
    return request.args.get("split", default)


def _window(total: int, default_count: int, name: str, most: int) -> tuple[int, int]:
    # An offset past the end is an empty page (like a list API), not an error.
    offset = min(int_arg("offset", 0, 0, 10**30), total)
    return offset, int_arg(name, default_count, 1, most)


@bp.get("/samples")
def list_samples():
    found = services()
    split = _split_arg("test")
    offset, limit = _window(len(found.samples.split(split)[0]), 15, "limit", MAX_LIMIT)
    wrong_only = bool_arg("wrong_only")
    model = found.plane.model() if wrong_only else found.plane.current  # mistakes need a model: 503 without
    return found.samples.page(found.plane, model, split, offset, limit, wrong_only)


def _index(split: str, raw: str) -> tuple[Any, int, int]:
    images, labels = services().samples.split(split, in_path=True)
    index = to_int(raw, "sample index", 0)
    if index >= len(images):
        raise NotFound(f"sample index {index} is out of range; split {split!r} has {len(images)} images")
    return images, labels, index


@bp.get("/samples/<split>/<index>.png")
def sample_png(split: str, index: str):
    images, _labels, position = _index(split, index)
    scale = int_arg("scale", 1, 1, MAX_SCALE)
    return Response(mnist_to_png(images[position], scale), mimetype="image/png",
                    headers={"Cache-Control": "public, max-age=86400"})


@bp.get("/samples/<split>/<index>.json")
def sample_json(split: str, index: str):
    images, labels, position = _index(split, index)
    return {"split": split, "index": position, "label": int(labels[position]),
            "pixels": images[position].tolist()}


@bp.get("/samples/grid.png")
def grid():
    found = services()
    split = _split_arg("train")
    images, labels = found.samples.split(split)
    offset, count = _window(len(images), 15, "count", MAX_GRID)
    cols = int_arg("cols", 5, 1, MAX_COLS)
    stop = min(len(images), offset + count)
    model = found.plane.current
    predicted = None
    if model is not None and stop > offset:
        predicted = [int(p) for p in found.samples.predictions(found.plane, model, split, offset, stop)[0]]
    png = render_grid(images[offset:stop], list(range(offset, stop)), [int(v) for v in labels[offset:stop]],
                      predicted, cols)
    return Response(png, mimetype="image/png")
