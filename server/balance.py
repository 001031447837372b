"""Least-connections accept across gunicorn workers that share one listening socket.

With one shared socket, whichever worker wakes first accepts: a burst of 16 keep-alive
connections often landed 13-16 on one of two workers. With SO_REUSEPORT the kernel spreads
them by a hash of the addresses, which is even only on average: 12/4 splits are common, and the
busier worker sets the tail latency. Here every worker writes how many connections it holds in
a table the master allocates before forking, and a worker that holds more than another live
worker leaves a waiting connection to that one (server/worker.py). Standard library only:
gunicorn's master imports it (server/gunicorn.conf.py).
"""

from __future__ import annotations

import ctypes
import math
import multiprocessing
import time

# A worker's loop writes its count at least once a second (gunicorn's notify); a worker quiet for
# longer has died or is stuck, and its seat no longer holds anyone back.
STALE_SECONDS = 5.0
_FIELDS = 2  # per seat: connections held, and when that was written (time.monotonic(); 0 = empty)


class ConnectionTable:
    """One seat per worker in memory shared by the master and every worker it forks."""

    def __init__(self, seats: int) -> None:
        # Lock-free: each seat has one writer, and an aligned 8-byte store is never seen half-written.
        self._values = multiprocessing.RawArray(ctypes.c_double, seats * _FIELDS)
        # Seats below this have been given out; readers scan only those (every request reads the table).
        self._bound = multiprocessing.RawValue(ctypes.c_int, 0)
        self._free = set(range(seats))  # used by the master only

    def seat(self) -> Seat | None:
        """The lowest free seat for the worker about to be forked (master), or None when all are taken."""
        if not self._free:
            return None
        index = min(self._free)
        self._free.remove(index)
        self._bound.value = max(self._bound.value, index + 1)
        return Seat(self, index)

    def release(self, index: int) -> None:
        """Empty a seat whose worker has exited (master)."""
        self.write(index, 0.0, 0.0)
        self._free.add(index)

    def write(self, index: int, connections: float, when: float) -> None:
        self._values[index * _FIELDS] = connections
        self._values[index * _FIELDS + 1] = when

    def fewest_except(self, index: int, now: float) -> float:
        """The fewest connections any other live worker holds; infinity when there is none."""
        fewest = math.inf
        values = self._values
        for other in range(0, self._bound.value * _FIELDS, _FIELDS):
            when = values[other + 1]
            if other != index * _FIELDS and when and now - when < STALE_SECONDS:
                fewest = min(fewest, values[other])
        return fewest


class Seat:
    """A worker's place in the table: what it holds, and whether it should leave a connection to another."""

    def __init__(self, table: ConnectionTable, index: int) -> None:
        self.table = table
        self.index = index

    def publish(self, connections: float) -> None:
        self.table.write(self.index, connections, time.monotonic())

    def withdraw(self) -> None:
        """Stop counting (a stopping worker accepts nothing, so it must not hold the others back)."""
        self.table.write(self.index, 0.0, 0.0)

    def should_yield(self, connections: int) -> bool:
        """Whether another live worker holds fewer connections and should accept the next one."""
        return connections > self.table.fewest_except(self.index, time.monotonic())

    def crowded(self, connections: int) -> bool:
        """Whether moving one connection to another worker would make the spread more even."""
        return connections - self.table.fewest_except(self.index, time.monotonic()) >= 2

    def release(self) -> None:
        self.table.release(self.index)
