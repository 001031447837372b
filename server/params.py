"""Reading request bodies and query parameters, with a 4xx saying exactly what was wrong."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from server.body import read_body
from server.errors import ApiError
from server.inference import InputError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def body_bytes() -> bytes:
    """The raw body: 413 past MAX_BODY_BYTES (also when chunked), 408 when it trickles in, 400 when cut short."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge()  # refused from the header alone, nothing read
    # A chunked body has no length to check up front: read one byte more than allowed to tell.
    data = read_body(request.environ, length if length is not None else limit + 1)
    if length is None and len(data) > limit:
        raise RequestEntityTooLarge()
    if length is not None and len(data) < length:
        raise InputError(f"request body incomplete: {len(data)} of {length} bytes (client disconnected?)")
    return data


def json_body(any_content_type: bool = False) -> Any:
    """The request body as JSON; 415 for another content type (unless `any_content_type`), 400 for non-JSON."""
    if not (any_content_type or request.is_json):
        raise ApiError(f"expected Content-Type: application/json, got {request.mimetype or 'none'!r}", 415)
    return parse_json(body_bytes())


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError too
        raise InputError(f"body is not valid JSON ({error})") from None


def json_object(required: tuple[str, ...] = (), any_content_type: bool = False) -> dict[str, Any]:
    body = json_body(any_content_type)
    if not isinstance(body, dict):
        raise InputError(f"body must be a JSON object, got {type(body).__name__}")
    missing = [key for key in required if key not in body]
    if missing:
        raise InputError(f"body lacks {', '.join(repr(key) for key in missing)}")
    return body


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
