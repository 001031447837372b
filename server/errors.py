"""What can go wrong with a request, as plain exceptions: no Flask here.

The codecs (server.protocols), the data plane and the socket-level body reader raise these;
server.http_errors turns each into the JSON answer `{"error": "<what was wrong>"}` with its
status. `ApiError` carries the HTTP status (and extra headers or JSON fields) with it.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request that cannot be answered; `status` is the HTTP status, the message says why."""

    status = 400

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra


class InputError(ApiError):
    """The request body or a parameter is malformed (400)."""

    status = 400


class UnsupportedMediaType(ApiError):
    status = 415


class NotFound(ApiError):
    status = 404


class Unavailable(ApiError):
    """The server is up but cannot answer yet (no model, no dataset)."""

    status = 503
