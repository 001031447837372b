"""gunicorn's gthread worker with a deadline on request headers.

gthread parses a request's headers inside a request thread, in blocking mode and without a
time limit, so WEB_CONCURRENCY x THREADS clients that trickle their headers (slowloris) stall
every other request. Here, once a connection has data, its headers must be complete within
HEADER_SECONDS (they are a few hundred bytes, normally in one packet); otherwise the watchdog
shuts the socket's read side and gunicorn drops the connection. The deadline is disarmed by
the `pre_request` hook in gunicorn.conf.py, which gunicorn calls when the headers are parsed.
"""

from __future__ import annotations

import threading
from typing import Any

# _DEFER is gthread's "hand the connection back to the poller" answer; gunicorn is pinned, and a
# changed gunicorn fails here at worker boot, where every server test sees it.
from gunicorn.workers.gthread import _DEFER, DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

from server.watchdog import WATCHDOG

HEADER_SECONDS = 1.0
_pending = threading.local()  # the header deadline of the request this thread is reading


def headers_complete() -> None:
    """Disarm this thread's header deadline (from gunicorn's pre_request hook)."""
    token = getattr(_pending, "token", None)
    if token is not None:
        WATCHDOG.disarm(token)
        _pending.token = None


class HeaderDeadlineWorker(ThreadWorker):
    def handle(self, conn: Any) -> Any:
        # A new connection first gets gthread's own wait for its first bytes (then back to the
        # poller); the deadline starts once there is something to read.
        if not conn.initialized and not conn.wait_for_data(DEFAULT_WORKER_DATA_TIMEOUT):
            return _DEFER
        _pending.token = WATCHDOG.arm(conn.sock, HEADER_SECONDS)
        try:
            return super().handle(conn)
        finally:
            headers_complete()
