"""server/watchdog.py in-process: a passed deadline shuts the socket's read side; a disarmed one never does."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from server.watchdog import Watchdog

LONG = 60.0  # never reached within a test
SHORT = 0.05
PATIENCE = 10.0
SETTLE = 0.2  # how long a blocked recv may wait for the watchdog before the test fails


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made: list[tuple[socket.socket, socket.socket]] = []
    yield made
    for pair in made:
        for sock in pair:
            sock.close()


def pair(pairs: list[tuple[socket.socket, socket.socket]]) -> tuple[socket.socket, socket.socket]:
    server_side, client_side = socket.socketpair()
    server_side.settimeout(PATIENCE)
    pairs.append((server_side, client_side))
    return server_side, client_side


def test_a_passed_deadline_wakes_the_blocked_read_with_end_of_file(pairs) -> None:
    watchdog = Watchdog()
    reader, _writer = pair(pairs)
    watchdog.arm(reader, SHORT)
    assert reader.recv(10) == b""
    assert watchdog.disarm(0) is True  # too late: it had fired


def test_an_earlier_deadline_armed_after_a_later_one_still_fires_first(pairs) -> None:
    watchdog = Watchdog()
    started, _ = pair(pairs)
    watchdog.arm(started, SHORT)
    assert started.recv(10) == b""  # the watchdog thread runs and has nothing left to wait for
    slow, _ = pair(pairs)
    fast, _ = pair(pairs)
    watchdog.arm(slow, LONG)
    time.sleep(SETTLE)  # let the thread go to sleep until the slow deadline...
    watchdog.arm(fast, SHORT)  # ...so arming an earlier one must wake it, or fast would wait a minute
    assert fast.recv(10) == b""


def test_a_later_deadline_does_not_delay_an_earlier_one(pairs) -> None:
    watchdog = Watchdog()
    first, _ = pair(pairs)
    watchdog.arm(first, SHORT)
    for _ in range(5):
        later, _ = pair(pairs)
        watchdog.arm(later, LONG)
    assert first.recv(10) == b""


def test_a_disarmed_deadline_never_fires(pairs) -> None:
    watchdog = Watchdog()
    reader, writer = pair(pairs)
    token = watchdog.arm(reader, SHORT)
    assert watchdog.disarm(token) is False
    other, _ = pair(pairs)
    watchdog.arm(other, SHORT)
    assert other.recv(10) == b""  # the watchdog has run past the disarmed deadline
    writer.sendall(b"still open")
    assert reader.recv(10) == b"still open"


def test_deadlines_later_than_the_next_wake_do_not_wake_the_thread(pairs) -> None:
    """A request arms two deadlines and disarms them within milliseconds; waking the thread for each
    cost two thread switches per request, so only an arm that moves the next wake earlier may wake it."""
    watchdog = Watchdog()
    reader, _ = pair(pairs)
    watchdog.arm(reader, LONG)
    time.sleep(SETTLE)  # the thread runs and goes to sleep until that deadline
    notified = []
    notify = watchdog._lock.notify
    watchdog._lock.notify = lambda *args: notified.append(1) or notify(*args)
    for _ in range(200):
        watchdog.disarm(watchdog.arm(reader, LONG))
    assert len(notified) <= 2, f"{len(notified)} wake-ups for 200 later deadlines"
