"""Reading request bodies so that slow clients cannot hold the server's threads.

gunicorn's gthread worker reads a body inside the request thread, so a client that trickles
its body (slowloris) holds a thread for as long as it likes, and WEB_CONCURRENCY x THREADS
such clients stall every other request. Here the body is read in pieces, each of which must
arrive within GRACE_SECONDS plus its size at MIN_BYTES_PER_SECOND (the idea of Kestrel's
minimum request body data rate); when a piece is late, one watchdog thread per worker shuts
the socket's read side, the read returns short, and the client gets 408. A proxy that
buffers bodies (nginx) in front of gunicorn makes this moot but is not required.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any

from server.errors import ApiError
from server.inference import InputError

PIECE = 16 * 1024
GRACE_SECONDS = 0.5
MIN_BYTES_PER_SECOND = 16 * 1024  # about 130 kbit/s: slower than a 2G link is cut


class _Watchdog:
    """Shuts the read side of sockets whose deadline passes before they are disarmed."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._armed: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, seconds: float) -> int:
        token = next(self._tokens)
        with self._lock:
            heapq.heappush(self._heap, (time.monotonic() + seconds, token, sock))
            self._armed.add(token)
            if self._thread is None:  # started lazily: in the worker, after gunicorn's fork
                self._thread = threading.Thread(target=self._run, name="body-watchdog", daemon=True)
                self._thread.start()
            self._lock.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Cancel; True when the deadline had already fired."""
        with self._lock:
            if token in self._armed:
                self._armed.discard(token)
                return False
            return True

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)  # disarmed in time
                if not self._heap:
                    self._lock.wait()
                    continue
                deadline, token, sock = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._lock.wait(delay)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(token)
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RD)  # wakes the blocked recv() with end-of-file


_WATCHDOG = _Watchdog()


def read_body(environ: dict[str, Any], wanted: int) -> bytes:
    """Up to `wanted` bytes of the body (less when it ends first), or 408 when it arrives too slowly."""
    stream = environ["wsgi.input"]
    sock = environ.get("gunicorn.socket")  # absent outside gunicorn (test client): no deadline
    pieces: list[bytes] = []
    received = 0
    while received < wanted:
        size = min(PIECE, wanted - received)
        token = _WATCHDOG.arm(sock, GRACE_SECONDS + size / MIN_BYTES_PER_SECOND) if sock is not None else None
        failure: Exception | None = None
        try:
            piece = stream.read(size)
        except Exception as error:  # gunicorn's own parser errors when a client vanishes mid-body
            piece, failure = b"", error
        fired = token is not None and _WATCHDOG.disarm(token)
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
