"""Reading request bodies so that slow clients cannot hold the server for long.

The worker (server/worker.py, gunicorn's gevent worker) reads bodies on its event loop, so a
client that trickles its body (slowloris) holds a greenlet and the bytes it sent, never a compute
thread. It is still cut off: the first N bytes must have arrived GRACE_SECONDS + N /
MIN_BYTES_PER_SECOND after reading began (the idea of Kestrel's minimum request body data rate);
when a piece is late, the watchdog (server.watchdog) shuts the socket's read side, the read
returns short, and the client gets 408. Request headers must arrive within gunicorn's `keepalive`
seconds (the gevent worker times the header read with it; server/gunicorn.conf.py).
"""

from __future__ import annotations

import time
from typing import Any

from server.errors import ApiError, InputError
from server.watchdog import WATCHDOG

PIECE = 16 * 1024
GRACE_SECONDS = 0.5
MIN_BYTES_PER_SECOND = 16 * 1024  # about 130 kbit/s: slower than a 2G link is cut


def too_large(limit: int) -> ApiError:
    return ApiError(f"request body is larger than the {limit} bytes allowed (MAX_BODY_BYTES)", 413)


def read_limited(environ: dict[str, Any], length: int | None, limit: int) -> bytes:
    """The raw body of `length` bytes (None: chunked): 413 past `limit` (refused from Content-Length alone,
    nothing read), 408 when it trickles in, 400 when cut short."""
    if length is not None and length > limit:
        raise too_large(limit)
    # A chunked body has no length to check up front: read one byte more than allowed to tell.
    data = read_body(environ, length if length is not None else limit + 1)
    if length is None and len(data) > limit:
        raise too_large(limit)
    if length is not None and len(data) < length:
        raise InputError(f"request body incomplete: {len(data)} of {length} bytes (client disconnected?)")
    return data


def read_body(environ: dict[str, Any], wanted: int) -> bytes:
    """Up to `wanted` bytes of the body (less when it ends first), or 408 when it arrives too slowly."""
    stream = environ["wsgi.input"]
    sock = environ.get("gunicorn.socket")  # absent outside gunicorn (test client): no deadline
    pieces: list[bytes] = []
    received = 0
    started = time.monotonic()
    while received < wanted:
        size = min(PIECE, wanted - received)
        # The budget is cumulative, so a bursty sender (curl --limit-rate) that keeps the average is fine.
        budget = started + GRACE_SECONDS + (received + size) / MIN_BYTES_PER_SECOND - time.monotonic()
        token = WATCHDOG.arm(sock, max(budget, 0.01)) if sock is not None else None
        failure: Exception | None = None
        try:
            piece = stream.read(size)
        except Exception as error:  # gunicorn's own parser errors when a client vanishes mid-body
            piece, failure = b"", error
        fired = token is not None and WATCHDOG.disarm(token)
        if fired and len(piece) < size:
            raise ApiError(f"request body arrived too slowly (under {MIN_BYTES_PER_SECOND} bytes/s after a"
                           f" {GRACE_SECONDS:g} s grace)", 408)
        if failure is not None:
            raise InputError(f"request body incomplete ({type(failure).__name__}: {failure})")
        if not piece:
            break
        pieces.append(piece)
        received += len(piece)
    return b"".join(pieces)
