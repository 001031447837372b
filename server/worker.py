"""gunicorn's gevent worker, accepting by least connections across the workers.

gunicorn's gevent worker reads every connection on one event loop per worker, so slow or silent
clients hold greenlets, never threads (compute runs on real threads: server/compute.py). What it
lacks is spreading: with one listening socket shared by the workers, whichever loop wakes first
accepts, and a client's burst of keep-alive connections often lands 16 of 16 on one worker, whose
one core then sets every request's latency (SO_REUSEPORT spreads by a hash of the addresses, which
is even only on average). Here each worker publishes how many connections it holds in a table the
master allocates before forking (server/balance.py), and a worker that holds more than another live
worker stops accepting for YIELD_PAUSE_SECONDS after each accept, leaving the next connection to the
other. Keep-alive connections outlive the moment they were spread (a client's pool opened while the
other worker was still loading its model, or had just been restarted), so a worker holding two or more
connections more than another answers one request with `Connection: close`, at most every
SHED_INTERVAL_SECONDS, and leaves accepting to the others for a moment after that connection ends; the
client opens a new connection, which goes to the worker with fewer. Never a
request with bytes behind it (a pipelined request, already read or still in the socket): closing after
the answer would drop it. Measured: bench/results.md, "Hostile clients".

This module is the one adapter to gunicorn's internals: `run` is gunicorn's GeventWorker.run with the
StreamServers kept (gevent's public stop_accepting and start_accepting need them), and `_followed` reads
the request parser's read-ahead buffer. tests/unit/test_worker_adapter.py and test_shed_pipelined.py fail,
naming what changed, when a gunicorn upgrade changes either.
"""

from __future__ import annotations

import math
import select
import socket
import time
from functools import partial
from typing import Any

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.sock import ssl_context
from gunicorn.workers.ggevent import GeventWorker

from server.balance import Seat

# Another worker's loop takes well under a millisecond to accept when it is not computing; on a busy
# machine it may not run for longer, so a worker keeps leaving connections to it for up to YIELD_LIMIT_SECONDS
# and then accepts anyway: a connection is never stranded by a stale or stuck count.
YIELD_PAUSE_SECONDS = 0.001
YIELD_LIMIT_SECONDS = 0.02
# Long enough for the closed connection to be counted out and its successor accepted elsewhere.
SHED_INTERVAL_SECONDS = 0.2
# After a shed connection ends, its client reconnects when it next sends (at once, or after its other
# connections had their turn): the shedding worker leaves accepts to the others for up to this long.
SHED_YIELD_LIMIT_SECONDS = 0.1
_PEEK_LIMIT = 64 * 1024  # a body still this far from complete is not looked past (its request is not shed)


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
        # Polled first: a gevent socket waits for data on EAGAIN even with MSG_DONTWAIT, which would hold this
        # request until the client sent more (it never does: it waits for this answer).
        if not select.select([sock], [], [], 0)[0]:
            return False
        waiting = sock.recv(missing + 1, socket.MSG_PEEK)  # readable: returns at once
    except (OSError, ValueError):
        return True  # closed or broken: no answer goes out anyway
    return len(waiting) > missing


class BalancedGeventWorker(GeventWorker):
    def init_process(self) -> None:
        # gunicorn.conf.py's pre_fork hook seats each worker; with reuse_port each worker has its own socket,
        # and a connection the kernel queued on it can only be accepted by it.
        seat = getattr(self, "connection_seat", None)
        self._seat: Seat | None = None if self.cfg.reuse_port else seat
        self._servers: list[StreamServer] = []
        self._held = 0
        self._paused_since: float | None = None
        self._pause_limit = YIELD_LIMIT_SECONDS
        self._last_shed = -math.inf
        self._sheds_pending = 0  # answers sent with `Connection: close` whose connection has not ended yet
        super().init_process()

    def run(self) -> None:
        """gunicorn 27.0.1's GeventWorker.run, keeping the servers (no pywsgi server_class, no SSL here)."""
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        for sock in self.sockets:
            sock.setblocking(1)
            server = StreamServer(sock, handle=partial(self.handle, sock), spawn=Pool(self.worker_connections),
                                  **ssl_args)
            if self.cfg.workers > 1:
                server.max_accept = 1
            server.start()
            self._servers.append(server)
        while self.alive:
            self.notify()
            gevent.sleep(1.0)
        self._publish()  # withdrawn: a stopping worker must not hold the others back
        try:
            for server in self._servers:
                server.close()  # stop accepting; requests in flight finish until graceful_timeout
            started = time.time()
            while time.time() - started <= self.cfg.graceful_timeout:
                if all(server.pool.free_count() == server.pool.size for server in self._servers):
                    return
                self.notify()
                gevent.sleep(1.0)
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for server in self._servers:
                server.stop(timeout=1)
        except Exception:  # as gunicorn's own: the worker exits either way
            pass

    def should_shed(self, req: Any) -> bool:
        """Whether `req` (headers just parsed) should be answered with `Connection: close` (pre_request hook)."""
        if self._seat is None or not self._seat.crowded(self._held) or _followed(req):
            return False
        now = time.monotonic()
        if now - self._last_shed < SHED_INTERVAL_SECONDS:
            return False
        self._last_shed = now
        self._sheds_pending += 1
        return True

    def notify(self) -> None:
        super().notify()  # at least once a second: keeps this worker's count fresh for the others
        self._publish()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self._held += 1
        self._publish()
        self._leave_next_accept(YIELD_LIMIT_SECONDS)
        try:
            super().handle(listener, client, addr)
        finally:
            self._held -= 1
            self._publish()
            if self._sheds_pending:
                # The client reconnects right away; were this worker accepting, it would as likely take the
                # successor back as the worker the shed was for (a CI run saw a 6/2 spread hold for 20 s).
                self._sheds_pending -= 1
                self._leave_next_accept(SHED_YIELD_LIMIT_SECONDS)

    def _leave_next_accept(self, limit: float) -> None:
        """Stop accepting for up to `limit` seconds while another live worker holds fewer connections."""
        if self._seat is not None and self._paused_since is None and self._seat.should_yield(self._held):
            self._paused_since = time.monotonic()
            self._pause_limit = limit
            for server in self._servers:
                server.stop_accepting()
            gevent.spawn_later(YIELD_PAUSE_SECONDS, self._resume)

    def _resume(self) -> None:
        assert self._seat is not None and self._paused_since is not None
        waited = time.monotonic() - self._paused_since
        if self.alive and waited < self._pause_limit and self._seat.should_yield(self._held):
            gevent.spawn_later(YIELD_PAUSE_SECONDS, self._resume)  # the other worker has not taken it yet
            return
        self._paused_since = None
        if self.alive:
            for server in self._servers:
                if not server.closed:
                    server.start_accepting()

    def _publish(self) -> None:
        if self._seat is None:
            return
        if not self.alive:
            self._seat.withdraw()
        else:
            self._seat.publish(self._held if self._held < self.worker_connections else math.inf)
