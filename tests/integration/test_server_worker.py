"""server/worker.py over real gunicorn with one worker and one compute thread: every connection of a worker
is read on its event loop, and the one compute thread must still serve every connection in turn, including
pipelined requests that are already read."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import eventually

PATH = "/v2/models/mnist/infer"
BODY = json.dumps({"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8",
                               "data": [0] * 784}]}).encode()
REQUEST = (f"POST {PATH} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
           f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
BUSY_CAP_SECONDS = 10.0  # the pipelining client stops by itself after this: long past a fair server's turn
OTHER_REQUESTS = 10


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server):
    return start_module_server(trained_home, WEB_CONCURRENCY="1", THREADS="1")


def read_answer(stream) -> tuple[int, dict]:
    """One HTTP/1.1 answer with a Content-Length body from a socket's file object."""
    status = int(stream.readline().split()[1])
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, json.loads(stream.read(length))


def test_pipelined_requests_on_one_connection_are_all_answered(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock, sock.makefile("rb") as stream:
        sock.sendall(REQUEST * 3)  # three at once: the 2nd and 3rd are read ahead with the 1st
        answers = [read_answer(stream) for _ in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert all(answer["outputs"][0]["shape"] == [1, 10] for _, answer in answers)


def test_a_client_that_never_pauses_does_not_keep_the_only_thread(server) -> None:
    """A pipelining client always has its next request waiting, so a thread that kept its connection
    whenever there is more to read would never serve anyone else until that client stops."""
    stop, gave_up, busy_answers, failures = threading.Event(), threading.Event(), [0], []

    def busy() -> None:
        deadline = time.monotonic() + BUSY_CAP_SECONDS
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock, \
                    sock.makefile("rb") as stream:
                sock.sendall(REQUEST)
                while not stop.is_set() and time.monotonic() < deadline:
                    sock.sendall(REQUEST)  # the next one is on its way before this answer is read
                    status, _ = read_answer(stream)
                    failures.extend([status] if status != 200 else [])
                    busy_answers[0] += 1
                if not stop.is_set():
                    gave_up.set()
                read_answer(stream)
        except OSError as error:
            failures.append(error)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    eventually(lambda: busy_answers[0] >= 20 or not thread.is_alive(), "20 answers to the pipelining client",
               timeout=BUSY_CAP_SECONDS + 30, interval=0.01)
    started = busy_answers[0]
    with requests.Session() as other:
        statuses = [other.post(server.url + PATH, data=BODY, timeout=BUSY_CAP_SECONDS + 10).status_code
                    for _ in range(OTHER_REQUESTS)]
    stop.set()
    thread.join(30)
    assert statuses == [200] * OTHER_REQUESTS
    assert not gave_up.is_set(), "the other client was answered only after the busy one gave up"
    assert busy_answers[0] > started, "the busy client was not served while the other one was"
    assert not failures, failures
