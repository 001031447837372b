"""Request-body limits through a real gevent worker (issue 23 item 2; server/body.py, docs/reliability.md):
while one client holds BODY_BUFFER_BYTES of a worker's body budget, another big body gets 503 with
Retry-After; the held one is cut with 408 at BODY_SECONDS although it came faster than the per-byte floor;
then the budget is free again. Only statuses are asserted, never a time.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import eventually, npy

PIECE = 16 * 1024
BUDGET = 3 * PIECE  # at least MAX_BODY_BYTES, as docs/reliability.md says
BIG = npy(np.zeros((60, 28, 28), np.uint8))  # 47 KB: three pieces, within the budget when nothing else holds it
NPY = {"Content-Type": "application/x-npy"}


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server):
    return start_module_server(trained_home, WEB_CONCURRENCY="1", BODY_BUFFER_BYTES=str(BUDGET),
                               BODY_SECONDS="8")


def test_a_held_budget_refuses_big_bodies_until_the_holder_is_cut_at_body_seconds(server) -> None:
    holder = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        # Two pieces declared, one and a bit sent: the reader holds two of the budget's three pieces while it
        # waits, so a big body's second piece finds no room.
        holder.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-npy\r\n"
                       b"Content-Length: %d\r\n\r\n" % (2 * PIECE) + BIG[:PIECE + 100])  # then nothing more
        assert requests.get(server.url + "/healthz", timeout=30).ok  # the worker's loop has read the holder
        answers: list[requests.Response] = []

        def refused() -> bool:
            answers.append(requests.post(server.url + "/predict", data=BIG, headers=NPY, timeout=30))
            return answers[-1].status_code == 503

        eventually(refused, "a big body refused while the budget is held", timeout=30,
                   detail=lambda: answers[-1].text)
        answer = answers[-1]
        assert "BODY_BUFFER_BYTES" in answer.json()["error"] and answer.headers["Retry-After"].isdigit()
        small = requests.post(server.url + "/predict", data=npy(np.zeros((1, 28, 28), np.uint8)), headers=NPY,
                              timeout=30)
        assert small.status_code == 200, small.text  # one piece: never refused for the budget
        reply = b""
        while b"BODY_SECONDS" not in reply and (piece := holder.recv(4096)):
            reply += piece
        assert reply.startswith(b"HTTP/1.1 408") and b"BODY_SECONDS" in reply, reply[:300]
    finally:
        holder.close()
    again = requests.post(server.url + "/predict", data=BIG, headers=NPY, timeout=30)
    assert again.status_code == 200 and len(again.json()["predictions"]) == 60, again.text
