"""Bad input against the real gunicorn server: fuzzing from its own OpenAPI document, a
corpus of hostile requests, a 100 MB body and slow clients.

Every answer must be a clear 4xx JSON error, and the server must be as healthy afterwards
as before: same worker processes (none crashed), ready, predicting, no traceback logged.
"""

from __future__ import annotations

import base64
import json
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from conftest import LiveServer, assert_json_error
from helpers import npy, v2_binary_tensor

from shared.preprocess import mnist_to_png

WORKERS, THREADS = 2, 2
MAX_BATCH = 1024
ZERO = [[0] * 28] * 28
MB = 1024 * 1024
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server(trained_home: Path, start_module_server) -> LiveServer:
    return start_module_server(trained_home, WEB_CONCURRENCY=str(WORKERS), THREADS=str(THREADS),
                               MAX_BATCH_SIZE=str(MAX_BATCH))


def worker_processes(server: LiveServer) -> list[psutil.Process]:
    return psutil.Process(server.process.pid).children()


def assert_healthy(server: LiveServer, workers_before: set[int]) -> None:
    """No worker died (same pids), still ready and predicting, and nothing blew up in the log."""
    assert {p.pid for p in worker_processes(server)} == workers_before, "a worker was replaced"
    assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
    response = requests.post(server.url + "/predict", json={"instances": [ZERO]}, timeout=10)
    assert response.status_code == 200, response.text
    assert "Traceback" not in server.log()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb() -> bytes:
    """A valid little PNG file that declares 100,000 x 100,000 pixels (10 GB once decoded)."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(bytes(1000))) + _png_chunk(b"IEND", b""))


def raw_json(instance_text: str) -> dict:
    """A body json.dumps cannot write (NaN, 1e999, 5000 digits): text spliced into one instance."""
    return {"data": '{"instances": [' + json.dumps(ZERO).replace("0", instance_text, 1) + "]}", "headers": JSON}


PNG = mnist_to_png(np.full((28, 28), 200, np.uint8), scale=4)
BOMB = decompression_bomb()


# (name, method, path, requests kwargs, status)
HOSTILE = [
    ("truncated PNG file", "POST", "/predict", {"files": {"f": ("a.png", PNG[: len(PNG) // 2], "image/png")}}, 400),
    ("truncated PNG b64", "POST", "/predict",
     {"json": {"instances": [{"b64": base64.b64encode(PNG[: len(PNG) // 2]).decode()}]}}, 400),
    ("corrupt JPEG", "POST", "/predict", {"files": {"f": ("a.jpg", b"\xff\xd8\xff\xe0" + bytes(500), "image/jpeg")}},
     400),
    ("decompression bomb", "POST", "/predict", {"files": {"f": ("bomb.png", decompression_bomb(), "image/png")}}, 400),
    ("bomb as b64", "POST", "/v1/models/mnist:predict",
     {"json": {"instances": [{"b64": base64.b64encode(decompression_bomb()).decode()}]}}, 400),
    ("not base64", "POST", "/predict", {"json": {"instances": [{"b64": "%%%not base64%%%"}]}}, 400),
    ("deeply nested JSON", "POST", "/predict", {"data": "[" * 100_000 + "]" * 100_000, "headers": JSON}, 400),
    ("deeply nested instances", "POST", "/v1/models/mnist:predict",
     {"data": '{"instances":' + "[" * 50_000 + "]" * 50_000 + "}", "headers": JSON}, 400),
    ("non-UTF-8 JSON", "POST", "/predict", {"data": b'{"instances": "\xff\xfe\xfa"}', "headers": JSON}, 400),
    ("NaN pixel", "POST", "/predict", raw_json("NaN"), 400),
    ("Infinity pixel", "POST", "/v1/models/mnist:predict", raw_json("Infinity"), 400),
    ("overflowing pixel", "POST", "/predict", raw_json("1e999"), 400),
    ("5000-digit pixel", "POST", "/predict", raw_json("9" * 5000), 400),
    ("string pixels", "POST", "/predict", {"json": {"instances": [[["x"] * 28] * 28]}}, 400),
    ("negative pixels", "POST", "/predict", {"json": {"instances": [[[-1] * 28] * 28]}}, 400),
    ("pixels over 255", "POST", "/v1/models/mnist:predict", {"json": {"instances": [[[256] * 28] * 28]}}, 400),
    ("boolean pixels", "POST", "/predict", {"json": {"instances": [[[True] * 28] * 28]}}, 400),
    ("ragged image", "POST", "/predict", {"json": {"instances": [[[0] * 28] * 27 + [[0] * 5]]}}, 400),
    ("empty batch", "POST", "/predict", {"json": {"instances": []}}, 400),
    ("text/plain", "POST", "/predict", {"data": "hello", "headers": {"Content-Type": "text/plain"}}, 415),
    ("no Content-Type", "POST", "/predict", {"data": b"\x00\x01"}, 415),
    ("XML to /predict", "POST", "/predict", {"data": "<a/>", "headers": {"Content-Type": "application/xml"}}, 415),
    # TF Serving reads JSON whatever the Content-Type says (as TF Serving does): XML is bad JSON.
    ("XML to TF Serving", "POST", "/v1/models/mnist:predict",
     {"data": "<a/>", "headers": {"Content-Type": "application/xml"}}, 400),
    # An object array in .npy is a pickle: loading it would run the sender's code.
    ("pickled .npy", "POST", "/predict",
     {"data": npy(np.array([{"x": 1}], dtype=object), allow_pickle=True),
      "headers": {"Content-Type": "application/x-npy"}}, 400),
    ("garbage .npy", "POST", "/predict",
     {"data": b"\x93NUMPY garbage", "headers": {"Content-Type": "application/x-npy"}}, 400),
    ("NaN .npy", "POST", "/predict",
     {"data": npy(np.full((1, 28, 28), np.nan)), "headers": {"Content-Type": "application/x-npy"}}, 400),
    ("batch over the limit", "POST", "/predict", {"json": {"instances": [ZERO] * (MAX_BATCH + 1)}}, 400),
    ("batch over the limit, .npy", "POST", "/predict",
     {"data": npy(np.zeros((MAX_BATCH + 1, 28, 28), np.uint8)), "headers": {"Content-Type": "application/x-npy"}},
     400),
    ("v2 shape claims 10^12 images", "POST", "/v2/models/mnist/infer",
     {"json": {"inputs": [{"name": "pixels", "shape": [10**12, 28, 28], "datatype": "UINT8", "data": [0]}]}}, 400),
    ("v2 header length past the body", "POST", "/v2/models/mnist/infer",
     {"data": b'{"inputs": []}', "headers": {"Inference-Header-Content-Length": "999999999999"}}, 400),
    ("v2 binary_data_size of 1 GB", "POST", "/v2/models/mnist/infer", v2_binary_tensor(
        {"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8", "parameters": {"binary_data_size": 10**9}},
        bytes(784)), 400),
    ("v2 BYTES decompression bomb", "POST", "/v2/models/mnist/infer", v2_binary_tensor(
        {"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(BOMB) + 4}},
        len(BOMB).to_bytes(4, "little") + BOMB), 400),
    ("sample index out of range", "GET", "/samples/test/10000.png", {}, 404),
    ("negative sample index", "GET", "/samples/test/-1.json", {}, 400),
    ("non-integer sample index", "GET", "/samples/test/1.5.json", {}, 400),
    ("word as sample index", "GET", "/samples/train/abc.png", {}, 400),
    ("split ../../etc in the path", "GET", "/samples/..%2F..%2Fetc/1.png", {}, 404),
    ("split ../../etc in the query", "GET", "/samples?split=../../etc", {}, 400),
    ("negative offset", "GET", "/samples?offset=-5", {}, 400),
    ("offset not an integer", "GET", "/samples?offset=1.5", {}, 400),
    ("huge grid", "GET", "/samples/grid.png?count=100000&cols=100000", {}, 400),
    ("huge scale", "GET", "/samples/test/1.png?scale=100000", {}, 400),
    ("unknown huge version", "GET", "/v1/models/mnist/versions/99999999999999999999999", {}, 404),
]


def test_hostile_corpus_gets_clear_4xx_and_leaves_the_server_healthy(server) -> None:
    workers = {p.pid for p in worker_processes(server)}
    for name, method, path, kwargs, status in HOSTILE:
        response = requests.request(method, server.url + path, timeout=60, **kwargs)
        try:
            assert_json_error(response, status)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None
    assert_healthy(server, workers)


def send_huge_body(server: LiveServer, total: int, chunked: bool) -> tuple[bytes, int]:
    """Stream `total` bytes from a generator over a raw socket, stopping as soon as the server
    answers. Returns the answer and how many body bytes had been sent by then."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % total
    block = b"[" + b"0," * (MB // 2 - 1) + b"0"  # 1 MB of plausible JSON, never the whole body
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + framing + b"\r\n\r\n")
        try:
            while sent < total and not select.select([sock], [], [], 0.05 if sent == 0 else 0)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending: read the answer
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and b'"}' not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer, sent


class PeakRss:
    """Samples the workers' total RSS every 10 ms in the background; `.peak` is the highest seen."""

    def __init__(self, workers: list[psutil.Process]) -> None:
        self.workers = workers
        self.start = self.peak = self._total()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _total(self) -> int:
        return sum(p.memory_info().rss for p in self.workers)

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._total())

    def growth(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak - self.start


# Declared too big: refused from Content-Length alone, nothing read. Chunked (no length up
# front): read up to MAX_BODY_BYTES (32 MB by default), then refused; never the 100 MB.
@pytest.mark.parametrize(("chunked", "most_growth_mb"), [(False, 20), (True, 90)], ids=["content-length", "chunked"])
def test_a_100_mb_body_gets_413_without_being_read_into_memory(server, chunked, most_growth_mb) -> None:
    workers = worker_processes(server)
    rss = PeakRss(workers)
    answer, sent = send_huge_body(server, 100 * MB, chunked)
    growth = rss.growth()
    print(f"\n100 MB body ({'chunked' if chunked else 'Content-Length'}): 413 after {sent / MB:.0f} MB sent,"
          f" worker RSS peak +{growth / MB:.1f} MB")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"MAX_BODY_BYTES" in answer
    assert sent < 100 * MB, "the server read the whole body before answering"
    assert growth < most_growth_mb * MB, f"worker memory grew by {growth / MB:.0f} MB"
    assert_healthy(server, {p.pid for p in workers})


@pytest.mark.parametrize("slow_part", ["body", "headers"])
def test_slow_clients_do_not_block_other_requests(server, slow_part) -> None:
    """More slow clients than the server has compute threads trickle a request for 10 s;
    ordinary requests must keep completing meanwhile."""
    body = json.dumps({"instances": [ZERO]}).encode()
    head = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    sent_at_once, trickled = (head, body) if slow_part == "body" else (b"", head)
    stop = threading.Event()
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(WORKERS * THREADS + 2)]

    def trickle(sock: socket.socket) -> None:
        try:
            sock.sendall(sent_at_once)
            for byte in trickled[:20]:  # one byte every half second: never finished
                if stop.wait(0.5):
                    return
                sock.sendall(bytes([byte]))
        except OSError:
            pass  # the server gave up on this client: allowed, that is one way to cope

    threads = [threading.Thread(target=trickle, args=(sock,), daemon=True) for sock in slow]
    for thread in threads:
        thread.start()
    completed, failed = 0, []
    try:
        time.sleep(1)  # the slow clients are connected and sending
        window_ends = time.monotonic() + 8
        while time.monotonic() < window_ends:
            try:
                response = requests.post(server.url + "/predict", json={"instances": [ZERO]}, timeout=3)
                completed += response.status_code == 200
            except requests.RequestException as error:
                failed.append(type(error).__name__)
            time.sleep(0.2)
    finally:
        stop.set()
        for sock in slow:
            sock.close()
    assert not failed and completed >= 5, f"{completed} completed, failed: {failed}"


def test_schemathesis_fuzzing_finds_no_5xx_and_no_schema_violation(server, tmp_path) -> None:
    """Property-based requests for every route and method in /openapi.json (bounded examples)."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json", "--url", server.url,
         "--checks", "not_a_server_error,response_schema_conformance,status_code_conformance",
         "--max-examples", "5", "--seed", "7", "--workers", "2", "--request-timeout", "30", "--no-color"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,  # its caches stay out of the repository
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases, summary
    print(f"\nschemathesis: {cases.group(1)} cases, {cases.group(2)} passed")  # the figure for the README
    assert int(cases.group(1)) >= 200
    assert "Traceback" not in server.log()
