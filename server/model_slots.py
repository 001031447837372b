"""Machine-wide model slots: at most `slots` model calls at once over every gunicorn worker, first come first served.

Each gunicorn worker has its own ONNX Runtime session and THREADS request threads, and the kernel
spreads connections over workers by hash (reuse_port). With 4 connections of 256-image requests on
2 workers, half the runs put 3 connections on one worker: 3 model calls there and 1 in the other
share 2 cores, and every call runs slower. Slots made in the gunicorn master before the fork let
exactly `slots` calls (one per core) run while the others wait in one queue for the whole machine,
as a central queue does in model servers that keep inference in processes of its own (LitServe),
without moving tensors between processes.

    slots = ModelSlots(2, queue_places=16)       # in the gunicorn master (gunicorn.conf.py)
    with slots.hold():                            # in any worker thread, after the fork
        model.predict(batch)

The queue is a ticket queue: a caller takes the next ticket and runs once fewer than `slots`
earlier tickets are still running; a release wakes exactly the next ticket's own semaphore. A
plain counting semaphore (or tokens in a pipe) is not first come first served: when both cores
are busy the woken waiter takes milliseconds to be scheduled, and a request that arrived
meanwhile takes the slot first, so about 5 % of calls waited two full runs (measured, see the
README's "Model slots").

A worker that dies holding or waiting for a slot would leak it; the master calls `forget(pid)`
when it reaps a worker (gunicorn's `child_exit`), which frees the dead worker's tickets. The
shared lock is held for a few microseconds per call; a worker killed inside that window would
leave it held, which no user-space lock between processes can rule out.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from server.errors import Unavailable
from shared.config import Config

_NEXT, _RELEASED = 0, 1  # places in the shared counters


class SlotQueueFull(Unavailable):
    """More callers wait than the queue has places: only possible with more threads than it was sized for."""


class ModelSlots:
    def __init__(self, slots: int, queue_places: int) -> None:
        """`slots` calls at once; `queue_places` tickets out at once (running or waiting): workers x threads."""
        if slots < 1 or queue_places < slots:
            raise ValueError("slots must be at least 1 and queue_places at least slots")
        context = multiprocessing.get_context("fork")  # everything below is shared by inheritance
        self.slots = slots
        self.queue_places = queue_places
        self._lock = context.Lock()
        self._counters = context.RawArray("q", 2)  # next ticket to hand out, tickets released so far
        self._owner = context.RawArray("q", queue_places)  # pid holding the ticket in each place; 0: free
        self._ticket = context.RawArray("q", queue_places)
        self._abandoned = context.RawArray("b", queue_places)  # its owner died while waiting
        self._wakeups = [context.Semaphore(0) for _ in range(queue_places)]

    @contextmanager
    def hold(self) -> Iterator[float]:
        """Wait for a slot, in arrival order; yields the seconds waited."""
        started = time.perf_counter()
        ticket = self._take_ticket()
        try:
            yield time.perf_counter() - started
        finally:
            with self._lock:
                self._free(ticket % self.queue_places)

    def running_and_waiting(self) -> tuple[int, int]:
        """How many tickets run now and how many wait (for tests and diagnostics)."""
        with self._lock:
            out = self._counters[_NEXT] - self._counters[_RELEASED]
        running = min(out, self.slots)
        return running, out - running

    def forget(self, pid: int) -> int:
        """Free the tickets of a process that exited (the master, on reaping a worker); returns how many."""
        freed = 0
        with self._lock:
            for place in range(self.queue_places):
                if self._owner[place] != pid:
                    continue
                freed += 1
                if self._admitted(self._ticket[place]):
                    self._wakeups[place].acquire(False)  # a wake-up it did not live to take
                    self._free(place)
                else:  # freed when its turn comes, so the tickets behind it keep their order
                    self._abandoned[place] = 1
        return freed

    def _take_ticket(self) -> int:
        with self._lock:
            ticket = self._counters[_NEXT]
            place = ticket % self.queue_places
            if self._owner[place]:
                raise SlotQueueFull(f"server busy: {self.queue_places} model calls already run or wait; retry")
            self._owner[place] = os.getpid()
            self._ticket[place] = ticket
            self._counters[_NEXT] = ticket + 1
            admitted = self._admitted(ticket)
        if not admitted:
            self._wakeups[place].acquire()
        return ticket

    def _admitted(self, ticket: int) -> bool:
        return ticket < self._counters[_RELEASED] + self.slots

    def _free(self, place: int) -> None:
        """Release the ticket in `place` and wake the ticket that takes its slot (lock held)."""
        while True:
            self._owner[place] = 0
            self._abandoned[place] = 0
            self._counters[_RELEASED] += 1
            next_ticket = self._counters[_RELEASED] + self.slots - 1
            if next_ticket >= self._counters[_NEXT]:
                return  # nobody waits: the next caller is admitted on arrival
            place = next_ticket % self.queue_places
            if not self._abandoned[place]:
                self._wakeups[place].release()
                return
            # Its owner died waiting: release its turn as well.


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 quota (`docker run --cpus`)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 file, or one this reads wrong: the affinity stands
        pass
    return cores


def from_config(config: Config) -> ModelSlots | None:
    """The slots MODEL_SLOTS asks for (`auto`: one per INFERENCE_THREADS cores), or None for no limit."""
    slots = config.model_slots
    if slots is None:
        slots = max(1, usable_cores() // config.inference_threads)
    if slots == 0:
        return None
    # Every request thread can hold a ticket; twice that leaves room for threads of a replaced worker.
    return ModelSlots(slots, queue_places=max(slots, 2 * config.workers * config.threads))


_inherited: ModelSlots | None = None


def share(slots: ModelSlots | None) -> None:
    """Set in the gunicorn master before the fork; every worker's app finds them with `inherited()`."""
    global _inherited
    _inherited = slots


def inherited() -> ModelSlots | None:
    return _inherited
