"""Request bodies: a whole body within BODY_SECONDS, and a worker's bodies within BODY_BUFFER_BYTES (issue 23).

server/body.py reads them; socket pairs stand in for the client's connection, so the watchdog cuts a
real blocked read. Nothing asserts a time: the statuses say which limit answered.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest
from conftest import assert_json_error, standin_loader

from server import body
from server.app import create_app
from server.body import BodyReader
from server.errors import ApiError
from shared.config import Config


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair()
    yield client, server
    client.close()
    server.close()


def environ_of(data: bytes) -> dict:
    return {"wsgi.input": io.BytesIO(data)}  # no gunicorn.socket: no deadline, only the budget


def test_a_body_sent_above_the_rate_floor_is_still_cut_at_body_seconds(connection, monkeypatch) -> None:
    # With only the per-byte floor, a maximum-size body could take half an hour; a floor of 1 byte/s stands
    # in for a client that keeps just above it.
    monkeypatch.setattr(body, "MIN_BYTES_PER_SECOND", 1)
    client, server = connection
    client.sendall(b"x" * 100)  # of 1000: then silence
    bound = threading.Timer(10, client.shutdown, (socket.SHUT_WR,))  # without a deadline: 400 (cut short)
    bound.start()
    reader = BodyReader(max_bytes=1000, seconds=0.2, buffer_bytes=1000)
    try:
        with reader.lease() as lease, pytest.raises(ApiError) as refused:
            reader.read({"wsgi.input": server.makefile("rb"), "gunicorn.socket": server}, 1000, lease)
    finally:
        bound.cancel()
    assert refused.value.status == 408, refused.value.message
    assert "BODY_SECONDS" in refused.value.message


BIG = 3 * body.PIECE  # a body of several pieces: past the first, each takes from the budget


def test_bytes_held_by_other_requests_count_against_the_worker_budget_and_come_back() -> None:
    reader = BodyReader(max_bytes=10 * BIG, seconds=10, buffer_bytes=BIG)
    with reader.lease() as first:
        assert reader.read(environ_of(b"a" * BIG), BIG, first) == b"a" * BIG
        with reader.lease() as second, pytest.raises(ApiError) as refused:
            reader.read(environ_of(b"b" * BIG), BIG, second)
        assert refused.value.status == 503
        assert refused.value.headers["Retry-After"].isdigit()
        assert "BODY_BUFFER_BYTES" in refused.value.message
        assert reader.budget.held == BIG  # the refused request gave back what it took
        with reader.lease() as small:  # one piece: admitted even with the budget spent, so big bodies
            assert reader.read(environ_of(b"s" * 100), 100, small) == b"s" * 100  # cannot starve batch-1
    assert reader.budget.held == 0
    with reader.lease() as third:
        assert reader.read(environ_of(b"c" * BIG), BIG, third) == b"c" * BIG


def test_a_request_past_the_budget_gets_503_with_retry_after_through_the_one_error_mapping(standin_home) -> None:
    app = create_app(Config(home=standin_home, body_buffer_bytes=1000), loader=standin_loader)
    try:
        answer = app.test_client().post("/v2/models/mnist/infer", data=b"{" + b" " * BIG,
                                        content_type="application/json")
    finally:
        app.extensions["mnist"].manager.stop()
    assert_json_error(answer, 503, "BODY_BUFFER_BYTES")
    assert answer.headers["Retry-After"].isdigit()
