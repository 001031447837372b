"""Deadlines on blocking socket reads: past its deadline, a socket's read side is shut down.

A thread blocked in recv() then sees end-of-file and gives up, which is the only way to bound
a read that gunicorn's gthread worker does in blocking mode. One watchdog thread per process
serves every deadline. Standard library only: gunicorn's master imports it (server.worker).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time


class Watchdog:
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


WATCHDOG = Watchdog()
