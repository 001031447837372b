"""Connections spread evenly over real gunicorn workers (server/balance.py, server/worker.py).

The kernel's own spread is uneven either way: with one shared socket whichever worker wakes
first accepts (gunicorn's stock gevent worker piles a burst onto one: bench/results.md), with
SO_REUSEPORT a hash of the addresses decides. Here the workers count."""

from __future__ import annotations

import http.client
import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from helpers import eventually

WORKERS = 2
CONNECTIONS = 8
REBALANCE_SECONDS = 20  # four moves at most every 0.2 s each, with room for a loaded CI machine


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server):
    live = start_module_server(trained_home, WEB_CONCURRENCY=str(WORKERS), THREADS="2")
    # /readyz answers once one worker is up; until the other has loaded too, the first takes everything.
    eventually(lambda: live.log().count("serving model version") >= WORKERS, f"{WORKERS} workers serving a model",
               timeout=60, detail=live.log)
    time.sleep(0.5)  # from the model to the worker's loop, which writes the worker's first count
    return live


def held_per_worker(server) -> dict[int, int]:
    """Established connections on the server's port, per worker pid."""
    held = {}
    for worker in psutil.Process(server.process.pid).children():
        sockets = worker.net_connections("tcp") if hasattr(worker, "net_connections") else worker.connections("tcp")
        held[worker.pid] = sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == server.port for c in sockets)
    return held


def ask(connection: http.client.HTTPConnection) -> int:
    # http.client opens a new connection by itself after an answer that said `Connection: close`.
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    response.read()
    return response.status


def test_connections_opened_one_after_another_alternate_between_workers(server) -> None:
    connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(CONNECTIONS)]
    try:
        assert [ask(connection) for connection in connections] == [200] * CONNECTIONS
        assert sorted(held_per_worker(server).values()) == [CONNECTIONS // WORKERS] * WORKERS
    finally:
        for connection in connections:
            connection.close()


def test_a_worker_holding_more_hands_connections_over(server) -> None:
    """One worker stopped (SIGSTOP) while a client opens its pool: the other takes every connection,
    after a short wait for the stopped one. Once both run, the crowded one closes connections one
    at a time after answering, until the pool is spread evenly; no request fails."""
    stopped = min(held_per_worker(server))
    os.kill(stopped, signal.SIGSTOP)
    connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=30) for _ in range(CONNECTIONS)]
    try:
        try:
            assert [ask(connection) for connection in connections] == [200] * CONNECTIONS
            assert held_per_worker(server)[stopped] == 0
        finally:
            os.kill(stopped, signal.SIGCONT)
        deadline = time.monotonic() + REBALANCE_SECONDS
        statuses = []
        even = [CONNECTIONS // WORKERS] * WORKERS
        while time.monotonic() < deadline and sorted(held_per_worker(server).values()) != even:
            statuses += [ask(connection) for connection in connections]
        assert sorted(held_per_worker(server).values()) == even, held_per_worker(server)
        assert statuses and set(statuses) == {200}
    finally:
        for connection in connections:
            connection.close()
