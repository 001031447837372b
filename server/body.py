"""Reading request bodies so that slow clients and many clients cannot hold the server for long.

The worker (server/worker.py, gunicorn's gevent worker) reads bodies on its event loop, so a
client that trickles its body (slowloris) holds a greenlet and the bytes it sent, never a compute
thread. It is still cut off, whichever comes first: the first N bytes must have arrived
GRACE_SECONDS + N / MIN_BYTES_PER_SECOND after reading began (the idea of Kestrel's minimum request
body data rate), and the whole body within BODY_SECONDS, so a maximum-size body holds its greenlet
and its bytes for seconds, not the half hour the per-byte floor alone allows. When a piece is late,
the watchdog (server.watchdog) shuts the socket's read side, the read returns short, and the client
gets 408. Request headers must arrive within gunicorn's `keepalive` seconds (the gevent worker times
the header read with it; server/gunicorn.conf.py).

A worker holds at most BODY_BUFFER_BYTES of request bodies at once (`BodyBudget`), plus each
connection's first PIECE: each request takes its bytes from the budget as they arrive and gives them
back once answered. One event loop reads up to `worker_connections` bodies at once, so without it a
thousand clients could each park MAX_BODY_BYTES in one worker; past the budget the client gets 503
with Retry-After instead. Bodies that fit in one piece (batch-1 requests) always pass, so big bodies
cannot starve them.
docs/reliability.md argues the defaults.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from server import metrics
from server.errors import ApiError, InputError, Unavailable
from server.watchdog import WATCHDOG

PIECE = 16 * 1024
GRACE_SECONDS = 0.5
MIN_BYTES_PER_SECOND = 16 * 1024  # about 130 kbit/s: slower than a 2G link is cut
RETRY_AFTER_SECONDS = 1  # a body budget frees as soon as the requests holding it are answered


def too_large(limit: int) -> ApiError:
    return ApiError(f"request body is larger than the {limit} bytes allowed (MAX_BODY_BYTES)", 413)


class BodyBudget:
    """The bytes of request bodies one worker may hold at once, shared by all its requests."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()  # a greenlet lock under gevent; a thread lock elsewhere (tests, tools)

    def take(self, size: int, always: bool = False) -> bool:
        with self._lock:
            if self.held + size > self.limit and not always:
                return False
            self.held += size
        return True

    def give(self, size: int) -> None:
        with self._lock:
            self.held -= size


class Lease:
    """What one request took from a `BodyBudget`; all of it goes back when the request is done."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> None:
        # A request's first piece is always admitted, so small requests are never refused because of big
        # ones; it is at most PIECE per connection, which worker_connections bounds.
        if not self.budget.take(size, always=self.held == 0 and size <= PIECE):
            metrics.BODY_BUDGET_FULL.inc()
            raise Unavailable(f"this worker is holding its {self.budget.limit} bytes of request bodies"
                              " (BODY_BUFFER_BYTES) for other requests; retry shortly",
                              headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self.held += size

    def give(self, size: int) -> None:
        self.budget.give(size)
        self.held -= size


class BodyReader:
    """Reads request bodies within MAX_BODY_BYTES, BODY_SECONDS and the worker's BODY_BUFFER_BYTES."""

    def __init__(self, max_bytes: int, seconds: float, buffer_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.seconds = seconds
        self.budget = BodyBudget(buffer_bytes)

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        """Hold a request's body bytes until the block ends (after its answer is built)."""
        lease = Lease(self.budget)
        try:
            yield lease
        finally:
            lease.give(lease.held)

    def read(self, environ: dict[str, Any], length: int | None, lease: Lease) -> bytes:
        """The raw body of `length` bytes (None: chunked): 413 past MAX_BODY_BYTES (refused from
        Content-Length alone, nothing read), 408 when it trickles in, 503 past the worker's budget,
        400 when cut short."""
        limit = self.max_bytes
        if length is not None and length > limit:
            raise too_large(limit)
        # A chunked body has no length to check up front: read one byte more than allowed to tell.
        data = self._read(environ, length if length is not None else limit + 1, lease)
        if length is None and len(data) > limit:
            raise too_large(limit)
        if length is not None and len(data) < length:
            raise InputError(f"request body incomplete: {len(data)} of {length} bytes (client disconnected?)")
        return data

    def _read(self, environ: dict[str, Any], wanted: int, lease: Lease) -> bytes:
        """Up to `wanted` bytes of the body (less when it ends first), or 408 when it arrives too slowly."""
        stream = environ["wsgi.input"]
        sock = environ.get("gunicorn.socket")  # absent outside gunicorn (test client): no deadline
        pieces: list[bytes] = []
        received = 0
        started = time.monotonic()
        while received < wanted:
            size = min(PIECE, wanted - received)
            lease.take(size)  # before reading: the bytes are only held once there is room for them
            # The budget is cumulative, so a bursty sender (curl --limit-rate) that keeps the average is fine.
            allowed = min(GRACE_SECONDS + (received + size) / MIN_BYTES_PER_SECOND, self.seconds)
            token = WATCHDOG.arm(sock, max(started + allowed - time.monotonic(), 0.01)) if sock is not None else None
            failure: Exception | None = None
            try:
                piece = stream.read(size)
            except Exception as error:  # gunicorn's own parser errors when a client vanishes mid-body
                piece, failure = b"", error
            lease.give(size - len(piece))
            fired = token is not None and WATCHDOG.disarm(token)
            if fired and len(piece) < size:
                raise ApiError(f"request body arrived too slowly (under {MIN_BYTES_PER_SECOND} bytes/s after a"
                               f" {GRACE_SECONDS:g} s grace, or not whole within {self.seconds:g} s:"
                               " BODY_SECONDS)", 408)
            if failure is not None:
                raise InputError(f"request body incomplete ({type(failure).__name__}: {failure})")
            if not piece:
                break
            pieces.append(piece)
            received += len(piece)
        return b"".join(pieces)
