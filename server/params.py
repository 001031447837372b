"""Flask glue for routes: query parameters, with a 4xx saying exactly what was wrong."""

from __future__ import annotations

import re

from flask import request

from server.errors import InputError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    return to_int(raw, f"query parameter {name}", low, high)


def to_int(raw: str, what: str, low: int, high: int | None = None) -> int:
    text = raw.strip()
    if not re.fullmatch(r"-?[0-9]+", text):
        raise InputError(f"{what} must be an integer, got {raw[:40]!r}")
    if len(text) > 30:  # int() of thousands of digits is slow (and refused past 4300)
        raise InputError(f"{what} must be between {low} and {high if high is not None else 10**30}")
    value = int(text)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InputError(f"{what} must be {bound}, got {value}")
    return value


def bool_arg(name: str, default: bool = False) -> bool:
    raw = request.args.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise InputError(f"query parameter {name} must be true or false, got {raw!r}")
