"""Deadlines on blocking socket reads: past its deadline, a socket's read side is shut down.

A reader blocked in recv() then sees end-of-file and gives up: request bodies get their rate
floor this way (server/body.py). One watchdog thread per process serves every deadline; under
gunicorn's gevent worker it is a greenlet, and the blocked reader another.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import socket
import threading
import time

TICK = 0.05  # how late a deadline may be cut: far below the seconds they are


class Watchdog:
    """Shuts the read side of sockets whose deadline passes before they are disarmed."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._armed: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._wake_at = math.inf  # when the thread wakes next, by itself

    def arm(self, sock: socket.socket, seconds: float) -> int:
        token = next(self._tokens)
        deadline = time.monotonic() + seconds
        with self._lock:
            heapq.heappush(self._heap, (deadline, token, sock))
            self._armed.add(token)
            if self._thread is None:  # started lazily: in the worker, after gunicorn's fork
                self._thread = threading.Thread(target=self._run, name="body-watchdog", daemon=True)
                self._thread.start()
            # Waking the thread on every arm cost two thread switches per request, a visible share of a
            # worker's GIL at batch 1 under load (bench/results.md, "Where a batch-1 request goes"); it
            # only needs waking when it would otherwise wake too late.
            if deadline < self._wake_at:
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
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _deadline, token, sock = heapq.heappop(self._heap)
                    if token in self._armed:
                        self._armed.discard(token)
                        with contextlib.suppress(OSError):  # already closed
                            sock.shutdown(socket.SHUT_RD)  # wakes the blocked recv() with end-of-file
                if not self._heap:
                    self._wake_at = math.inf
                    self._lock.wait()
                    continue
                # Disarmed deadlines stay queued until they pass (dropping them early emptied the queue
                # after every request, so the next arm had to wake the thread); at most one wake per TICK.
                self._wake_at = max(self._heap[0][0], now + TICK)
                self._lock.wait(self._wake_at - now)


WATCHDOG = Watchdog()
