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
"""

from __future__ import annotations

import select
import threading
from typing import Any

# _DEFER is gthread's "hand the connection back to the poller" answer; gunicorn is pinned, and a
# changed gunicorn fails here at worker boot, where every server test sees it.
from gunicorn.workers.gthread import _DEFER, DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

from server.watchdog import WATCHDOG

HEADER_SECONDS = 1.0
# A client that sends its next request as soon as it has the answer (a service calling in a loop)
# does so within a fraction of a millisecond; one that does not is better served by the poller.
LINGER_SECONDS = 0.002
_pending = threading.local()  # the header deadline of the request this thread is reading


def headers_complete() -> None:
    """Disarm this thread's header deadline (from gunicorn's pre_request hook)."""
    token = getattr(_pending, "token", None)
    if token is not None:
        WATCHDOG.disarm(token)
        _pending.token = None


def _readable_within(sock: Any, seconds: float) -> bool:
    try:
        readable, _, _ = select.select([sock], [], [], seconds)
    except (OSError, ValueError):  # closed meanwhile
        return False
    return bool(readable)


class HeaderDeadlineWorker(ThreadWorker):
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
