"""The `Connection: close` nudge never drops a request already pipelined behind the one it answers (issue 23).

server/worker.py answers one request with `Connection: close` when its worker holds more connections than
another; gunicorn then closes the connection after the answer, and any request the client had already sent
on it is lost. The decision is taken when a request's headers are parsed (gunicorn's pre_request hook), on
the request gunicorn's own parser produced: here the parser reads real pipelined bytes.
"""

from __future__ import annotations

import math
import socket

import pytest
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from server.worker import BalancedGeventWorker

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
POST = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
BODY = b'{"instances": []}'


class CrowdedSeat:
    def crowded(self, _connections: int) -> bool:
        return True


class Worker:
    """What should_shed reads of a BalancedGeventWorker: a seat that says this worker holds too many."""

    _seat = CrowdedSeat()
    _held = 3
    _last_shed = -math.inf
    _sheds_pending = 0
    should_shed = BalancedGeventWorker.should_shed


def first_request(stream: bytes, sock: socket.socket | None = None):
    source = sock if sock is not None else iter([stream])
    return next(iter(RequestParser(Config(), source, ("127.0.0.1", 1))))


@pytest.mark.parametrize("stream", [GET + GET, POST + BODY + GET, GET + POST + BODY],
                         ids=["get-then-get", "post-then-get", "get-then-post"])
def test_a_request_with_another_pipelined_behind_it_is_not_shed(stream):
    assert not Worker().should_shed(first_request(stream))


@pytest.mark.parametrize("stream", [GET, POST + BODY], ids=["get", "post"])
def test_a_request_alone_on_its_connection_is_shed(stream):
    assert Worker().should_shed(first_request(stream))


def test_a_pipelined_request_still_in_the_socket_is_seen():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(GET)
        request = first_request(b"", ours)
        assert Worker().should_shed(request)  # nothing behind it yet
        theirs.sendall(GET)  # the next request arrives, not yet read by gunicorn, before the answer
        assert not Worker().should_shed(request)


def test_a_request_alone_on_a_gevent_socket_is_judged_without_waiting_for_more_bytes():
    """The worker's sockets are gevent's, whose recv waits for data on EAGAIN even with MSG_DONTWAIT: the check
    must poll, or it holds the request until the client sends more (it never does: it waits for the answer)."""
    import gevent
    from gevent import socket as gsocket

    ours, theirs = gsocket.socketpair()
    with ours, theirs:
        theirs.sendall(GET)
        request = first_request(b"", ours)
        with gevent.Timeout(5, AssertionError("should_shed waited for bytes that never come")):
            assert Worker().should_shed(request)
