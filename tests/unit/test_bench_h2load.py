"""bench/lib/h2load.py: a gRPC call h2load counts as done must have brought the server's answer back.

The outputs are h2load 1.52's own lines (a run against our gRPC server), with the counts varied."""

from __future__ import annotations

import pytest

from bench.lib import h2load

ANSWER = 108  # bytes of the server's answer; 113 with gRPC's prefix


def output(done: int, data: int, started: int | None = None, failed: int = 0) -> str:
    started = done if started is None else started
    return (f"finished in 8.00s, 1165.50 req/s, 249.31KB/s\n"
            f"requests: {started} total, {started} started, {done} done, {done - failed} succeeded, {failed} failed,"
            f" 0 errored, 0 timeout\n"
            f"status codes: {done} 2xx, 0 3xx, 0 4xx, 0 5xx\n"
            f"traffic: 1.95MB (2042338) total, 27.39KB (28047) headers (space savings 96.29%), 1.00MB ({data}) data\n")


def test_a_message_is_framed_as_grpc_sends_it() -> None:
    assert h2load.frame(b"abc") == b"\x00\x00\x00\x00\x03abc"


def test_every_call_answered_counts() -> None:
    assert h2load.check(output(9324, 9324 * 113), ANSWER) == 9324


def test_calls_in_flight_at_the_end_may_have_brought_their_answer() -> None:
    assert h2load.check(output(100, 103 * 113, started=104), ANSWER) == 100


def test_a_call_answered_with_an_error_status_is_caught() -> None:
    # A failed gRPC call is an HTTP 200 with trailers only: no answer bytes.
    with pytest.raises(RuntimeError, match="some calls failed"):
        h2load.check(output(100, 99 * 113), ANSWER)


def test_an_answer_of_another_size_is_caught() -> None:
    with pytest.raises(RuntimeError, match="some calls failed"):
        h2load.check(output(100, 100 * 120), ANSWER)


def test_http_level_failures_are_caught() -> None:
    with pytest.raises(RuntimeError, match="HTTP/2 level"):
        h2load.check(output(100, 100 * 113, failed=1), ANSWER)


def test_output_without_counts_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="no request or traffic counts"):
        h2load.check("connect: Connection refused\n", ANSWER)
