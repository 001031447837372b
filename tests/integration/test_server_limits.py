"""Limits and protection: body size (413), batch size, and the optional bearer token."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import assert_json_error
from helpers import eventually, npy

from shared.preprocess import mnist_to_png

TOKEN = "s3cret-token-never-logged"
MAX_BODY = 60_000
MAX_BATCH = 4
SERVER_THREADS = 2
ZERO = [[0] * 28 for _ in range(28)]


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server):
    return start_module_server(trained_home, AUTH_TOKEN=TOKEN, MAX_BODY_BYTES=str(MAX_BODY),
                               MAX_BATCH_SIZE=str(MAX_BATCH), WEB_CONCURRENCY="1", THREADS=str(SERVER_THREADS))


AUTH = {"Authorization": f"Bearer {TOKEN}"}
V2_ONE = {"inputs": [{"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}]}
PROTECTED = [("/predict", {"instances": [ZERO]}), ("/v1/models/mnist:predict", {"instances": [ZERO]}),
             ("/v1/models/mnist/versions/1:predict", {"instances": [ZERO]}), ("/v2/models/mnist/infer", V2_ONE)]


@pytest.mark.parametrize(("path", "body"), PROTECTED)
def test_prediction_routes_need_the_bearer_token(server, path, body) -> None:
    url = server.url + path
    missing = assert_json_error(requests.post(url, json=body, timeout=10), 401, "bearer")
    assert TOKEN not in str(missing)
    response = requests.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert_json_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_json_error(requests.post(url, json=body, headers={"Authorization": TOKEN}, timeout=10), 401)
    assert requests.post(url, json=body, headers=AUTH, timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/models", "/openapi.json", "/samples",
                                  "/samples/test/1.png", "/v1/models/mnist", "/v2/health/ready", "/"])
def test_other_routes_stay_open(server, path) -> None:
    assert requests.get(server.url + path, timeout=30).status_code == 200


def test_the_token_is_never_logged(server) -> None:
    before = server.log().count("POST /predict")
    requests.post(server.url + "/predict", json={"instances": [ZERO]}, headers=AUTH, timeout=10)
    requests.post(server.url + "/predict", json={"instances": [ZERO]}, headers={"Authorization": "Bearer guess"},
                  timeout=10)
    # A request's line is written once its answer has been sent: wait for both before reading the log.
    eventually(lambda: server.log().count("POST /predict") >= before + 2, "both requests' lines", timeout=10)
    log = server.log()
    assert TOKEN not in log and "guess" not in log


def test_bodies_over_max_body_bytes_get_413(server) -> None:
    big = {"instances": [[[255] * 28] * 28] * 20}  # ~60 kB of JSON digits
    assert_json_error(requests.post(server.url + "/predict", json=big, headers=AUTH, timeout=10), 413,
                      "MAX_BODY_BYTES")
    response = requests.post(server.url + "/predict", data=npy(np.zeros((100, 28, 28), np.uint8)),
                             headers={**AUTH, "Content-Type": "application/x-npy"}, timeout=10)
    assert_json_error(response, 413)
    chunked = iter([b'{"instances": [', b"0," * MAX_BODY, b"0]}"])  # no Content-Length: caught while reading
    response = requests.post(server.url + "/predict", data=chunked,
                             headers={**AUTH, "Content-Type": "application/json"}, timeout=10)
    assert_json_error(response, 413)


def test_batches_over_max_batch_size_get_400(server) -> None:
    over = MAX_BATCH + 1
    assert_json_error(requests.post(server.url + "/predict", json={"instances": [ZERO] * over}, headers=AUTH,
                                    timeout=10), 400, "MAX_BATCH_SIZE")
    assert_json_error(requests.post(server.url + "/v1/models/mnist:predict", json={"inputs": [ZERO] * over},
                                    headers=AUTH, timeout=10), 400, "MAX_BATCH_SIZE")
    v2 = {"inputs": [{"name": "pixels", "shape": [over, 28, 28], "datatype": "UINT8", "data": [0] * 784 * over}]}
    assert_json_error(requests.post(server.url + "/v2/models/mnist/infer", json=v2, headers=AUTH, timeout=10),
                      400, "MAX_BATCH_SIZE")
    response = requests.post(server.url + "/predict", data=npy(np.zeros((over, 28, 28), np.uint8)),
                             headers={**AUTH, "Content-Type": "application/x-npy"}, timeout=10)
    assert_json_error(response, 400, "MAX_BATCH_SIZE")
    png = mnist_to_png(np.zeros((28, 28), np.uint8))
    files = [("f", (f"{i}.png", png, "image/png")) for i in range(over)]
    assert_json_error(requests.post(server.url + "/predict", files=files, headers=AUTH, timeout=10), 400,
                      "MAX_BATCH_SIZE")
    exactly = requests.post(server.url + "/predict", json={"instances": [ZERO] * MAX_BATCH}, headers=AUTH,
                            timeout=10)
    assert exactly.status_code == 200 and len(exactly.json()["predictions"]) == MAX_BATCH


def test_openapi_states_the_configured_limits(server) -> None:
    document = requests.get(server.url + "/openapi.json", timeout=5).json()
    assert document["components"]["schemas"]["PredictRequest"]["properties"]["instances"]["maxItems"] == MAX_BATCH
    assert str(MAX_BODY) in document["info"]["description"]


@pytest.mark.parametrize("slow_part", ["body", "headers"])
def test_slow_clients_are_cut_off_and_do_not_block_other_requests(server, slow_part) -> None:
    """More clients than the server has threads trickle their bodies (408) or headers (dropped)."""
    body = json.dumps({"instances": [ZERO]}).encode()
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    at_once, trickled = (head, body) if slow_part == "body" else (b"", head)
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(SERVER_THREADS + 1)]
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the server may hang up on us: that is the point
            sock.sendall(at_once)
            for byte in trickled[:40]:  # one byte every 0.25 s: never finished while the test runs
                if stop.wait(0.25):
                    return
                sock.sendall(bytes([byte]))

    threads = [threading.Thread(target=trickle, args=(sock,), daemon=True) for sock in slow]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        started = time.monotonic()
        answer = requests.post(server.url + "/predict", json={"instances": [ZERO]}, headers=AUTH, timeout=10)
        assert answer.status_code == 200 and time.monotonic() - started < 5
        slow[0].settimeout(10)
        reply = b""
        try:
            while b"too slowly" not in reply and (piece := slow[0].recv(4096)):
                reply += piece  # the answer's head and body may come in separate packets
        except ConnectionResetError:  # a close with our unread bytes in its buffer is a reset
            pass
        if slow_part == "body":
            assert reply.startswith(b"HTTP/1.1 408") and b"too slowly" in reply, reply[:200]
        else:
            assert reply == b"", reply[:200]  # headers never completed: the connection is dropped
    finally:
        stop.set()
        for sock in slow:
            sock.close()
