"""Optional bearer-token protection of the prediction routes (AUTH_TOKEN; off when empty)."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import request

from server.errors import ApiError
from server.services import services


def check_token(authorization: str, expected: str) -> None:
    """401 unless `authorization` (the header's value) is `Bearer <expected>`; nothing to check when empty."""
    if not expected:
        return
    scheme, _, given = authorization.partition(" ")
    # compare_digest: the time taken does not reveal how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError("missing or wrong bearer token; send Authorization: Bearer <token>", 401,
                       headers={"WWW-Authenticate": 'Bearer realm="mnist"'})


def require_token(view: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check_token(request.headers.get("Authorization", ""), services().config.auth_token)
        return view(*args, **kwargs)

    return guarded
