"""Optional bearer-token protection of the prediction routes (AUTH_TOKEN; off when empty), checked by
the one inference path (server.pipeline) and the gRPC transport."""

from __future__ import annotations

import hmac

from server.errors import ApiError


def check_token(authorization: str, expected: str) -> None:
    """401 unless `authorization` (the header's value) is `Bearer <expected>`; nothing to check when empty."""
    if not expected:
        return
    scheme, _, given = authorization.partition(" ")
    # compare_digest: the time taken does not reveal how much of a guess was right.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError("missing or wrong bearer token; send Authorization: Bearer <token>", 401,
                       headers={"WWW-Authenticate": 'Bearer realm="mnist"'})

