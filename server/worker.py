"""gunicorn's gthread worker with a deadline on request headers, and keep-alive without a hand-off.

Header deadline: gthread parses a request's headers inside a request thread, in blocking mode and
without a time limit, so WEB_CONCURRENCY x THREADS clients that trickle their headers (slowloris)
stall every other request. Here, once a connection has data, its headers must be complete within
HEADER_SECONDS (they are a few hundred bytes, normally in one packet); otherwise the watchdog
shuts the socket's read side and gunicorn drops the connection. The deadline is disarmed by
the `pre_request` hook in gunicorn.conf.py, which gunicorn calls when the headers are parsed.

Keep-alive: after each answer gthread hands the connection back to its poller thread, which
hands it to the thread pool again when the next request arrives: three thread wake-ups per
request, about a quarter of a batch-1 request's worker samples in py-spy before this. Here the
thread that answered keeps the connection for up to LINGER_SECONDS when no other connection is
waiting for a thread, and serves the next request itself. When one is waiting, the connection
goes back to the poller as before, so no connection can hold a thread while another waits.

Least connections: when the workers share one listening socket (reuse_port off), each publishes
how many connections it holds (server/balance.py), and a worker holding more than another live
worker leaves a waiting connection to it: it takes the listener out of its poller for
YIELD_PAUSE_SECONDS, and accepts anyway once it has left one for YIELD_LIMIT_SECONDS, so a
connection is never stranded by a stale count. Keep-alive connections outlive the moment they
were spread (a client's pool opened while the other worker still held closing connections, or
while a restarted worker booted), so a worker holding two or more connections more than another
answers one request with `Connection: close`, at most every SHED_INTERVAL_SECONDS; the client
opens a new connection, which goes to the worker with fewer. Never a request with bytes behind it
(a pipelined request, already read or still in the socket): closing after the answer would drop it.
A request that arrives after the answer was decided is the client's to retry, as HTTP/1.1 says of any
connection a server closes.
"""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from typing import Any

# _DEFER is gthread's "hand the connection back to the poller" answer; gunicorn is pinned, and a
# changed gunicorn fails here at worker boot, where every server test sees it.
from gunicorn.workers.gthread import _DEFER, DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

from server.balance import Seat
from server.watchdog import WATCHDOG

HEADER_SECONDS = 1.0
# A client that sends its next request as soon as it has the answer (a service calling in a loop)
# does so within a fraction of a millisecond; one that does not is better served by the poller.
LINGER_SECONDS = 0.002
# Another worker's poller takes well under a millisecond to accept, unless a request thread holds
# its GIL (up to the 5 ms switch interval).
YIELD_PAUSE_SECONDS = 0.001
YIELD_LIMIT_SECONDS = 0.02
_YIELD_STREAK_GAP = 0.05  # yields further apart than this are about different connections
# Long enough for the closed connection to be counted out and its successor accepted elsewhere.
SHED_INTERVAL_SECONDS = 0.2
_PEEK_LIMIT = 64 * 1024  # a body still this far from complete is not looked past (its request is not shed)
_pending = threading.local()  # the header deadline of the request this thread is reading


def headers_complete() -> None:
    """Disarm this thread's header deadline (from gunicorn's pre_request hook)."""
    token = getattr(_pending, "token", None)
    if token is not None:
        WATCHDOG.disarm(token)
        _pending.token = None


def _followed(req: Any) -> bool:
    """Whether bytes past `req`'s body have arrived (or may have: a chunked or large body is not looked past)."""
    length = 0
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING":
            return True
        if name == "CONTENT-LENGTH":
            length = int(value)  # gunicorn's parser has checked it
    buffered = len(req.unreader.buf.getvalue())  # read past the headers: the body, then what follows it
    if buffered > length:
        return True
    missing = length - buffered
    sock = getattr(req.unreader, "sock", None)
    if sock is None or missing > _PEEK_LIMIT:
        return sock is not None
    try:
        waiting = sock.recv(missing + 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True  # closed or broken: no answer goes out anyway
    return len(waiting) > missing


def _readable_within(sock: Any, seconds: float) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], seconds)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(readable)


class HeaderDeadlineWorker(ThreadWorker):
    def init_process(self) -> None:
        # gunicorn.conf.py's pre_fork hook seats each worker; with reuse_port each worker has its
        # own socket, and a connection the kernel queued on it can only be accepted by it.
        seat = getattr(self, "connection_seat", None)
        self._seat: Seat | None = None if self.cfg.reuse_port else seat
        self._pause_accepting = False
        self._streak_start = self._last_yield = self._last_shed = -math.inf
        super().init_process()

    def should_shed(self, req: Any) -> bool:
        """Whether `req` (headers just parsed) should be answered with `Connection: close` (pre_request hook)."""
        if self._seat is None or not self._seat.crowded(self.nr_conns) or _followed(req):
            return False
        now = time.monotonic()
        if now - self._last_shed < SHED_INTERVAL_SECONDS:
            return False
        self._last_shed = now
        return True

    def notify(self) -> None:
        super().notify()  # once per pass of gthread's loop, and at least once a second
        self._publish()

    def accept(self, listener: Any) -> None:
        if self._seat is not None and self._seat.should_yield(self.nr_conns):
            now = time.monotonic()
            if now - self._last_yield > _YIELD_STREAK_GAP:
                self._streak_start = now
            self._last_yield = now
            if now - self._streak_start < YIELD_LIMIT_SECONDS:
                self._pause_accepting = True
                return
        super().accept(listener)
        self._publish()

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._pause_accepting:
            self._pause_accepting = False
            self.set_accept_enabled(False)  # gthread's loop registers the listener again on its next pass
            timeout = YIELD_PAUSE_SECONDS
        super().wait_for_and_dispatch_events(timeout)

    def _publish(self) -> None:
        if self._seat is None:
            return
        if not self.alive:
            self._seat.withdraw()  # it accepts nothing more: others must not leave connections to it
        else:
            self._seat.publish(self.nr_conns if self.nr_conns < self.worker_connections else math.inf)

    def handle(self, conn: Any) -> Any:
        # A new connection first gets gthread's own wait for its first bytes (then back to the
        # poller); the deadline starts once there is something to read.
        if not conn.initialized and not conn.wait_for_data(DEFAULT_WORKER_DATA_TIMEOUT):
            return _DEFER
        while True:
            keep_alive = self._handle_one(conn)
            if keep_alive is not True or not self.alive or self._others_waiting():
                return keep_alive
            # Bytes already read past the answered request (pipelining) make the socket look idle.
            if not conn.parser.unreader.buf.getvalue() and not _readable_within(conn.sock, LINGER_SECONDS):
                return keep_alive

    def _handle_one(self, conn: Any) -> Any:
        _pending.token = WATCHDOG.arm(conn.sock, HEADER_SECONDS)
        try:
            return super().handle(conn)
        finally:
            headers_complete()

    def _others_waiting(self) -> bool:
        # ThreadPoolExecutor's queue of submitted, not yet started calls: connections with a request.
        return not self.tpool._work_queue.empty()
