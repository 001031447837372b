"""Legit load while hostile clients run: what a slow, silent or bomb-sending client costs everyone else.

Against one bare server (gunicorn with the project's defaults: 2 workers, server/gunicorn.conf.py,
a trained model) wrk measures batch-1 v2 JSON at 16 connections twice: clean, then with a fixed
hostile mix running alongside (`MIX`): silent connections, request headers sent a byte at a time,
maximum-size bodies sent just above the body-rate floor (server/body.py) and decompression-bomb
images (a tiny PNG declaring a huge size, and maximum-size PNG/WebP images that really decode).
A prober GETs /readyz on a fresh connection every PROBE_INTERVAL as an orchestrator would; a
sampler records each worker's RSS and the set of worker PIDs (a new PID is a restart).

The same runs against the compose stack (`COMPOSE`: docker-compose.yml's defaults, one server replica of
2 workers behind HAProxy, bench.lib.compose), everything sent to the proxy's published port; restarts
there also count Docker's RestartCount and gunicorn's "Booting worker" lines. Skipped, saying why, when no
Docker engine answers.

    python -m bench.run --only hostile                   # the server as configured and the compose stack
    BENCH_HOSTILE_MODELS=gevent-balanced,gevent,gevent-reuseport,gthread,compose-haproxy BENCH_HOSTILE_ROUNDS=2 \
        python -m bench.parts.hostile                    # against the alternatives, rounds alternating

Targets (issue 23): legit throughput >= 80 % of the clean run, /readyz p99 <= 50 ms, no worker
restart, no failed legit request, peak RSS per worker <= 300 MiB.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psutil

from bench.common import ROOT, TMP, bench_mnist, load_average, median, write_part
from bench.lib.compose import docker_unavailable
from bench.lib.compose import running as compose_running
from bench.lib.processes import children, free_port, rss_mib
from bench.report import Parts, measured, render, table

SECONDS = int(os.environ.get("BENCH_HOSTILE_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_HOSTILE_ROUNDS", "1"))
CONNECTIONS = 16
PATH = "/v2/models/mnist/infer"
PROBE_INTERVAL = 0.1
PROBE_TIMEOUT = 2.0
SETTLE_SECONDS = 1.0  # the hostile clients take their places before wrk starts
# How many clients of each kind run at once; each reconnects when the server closes on it.
MIX = {"silent": 8, "slow_headers": 4, "slow_body": 2, "bomb": 1}
SLOW_BODY_FACTOR = 1.25  # times the body-rate floor: slow, but allowed
HOME = TMP / "hostile-home"
# The server's environment: docker-compose.yml's defaults, as bench.http_bench uses them.
SERVER_ENV = {"WEB_CONCURRENCY": "2", "THREADS": "1", "INFERENCE_THREADS": "1", "RELOAD_INTERVAL": "2",
              "MAX_BATCH_SIZE": "1024", "REQUEST_TIMEOUT": "30", "AUTH_TOKEN": ""}

# Worker models: the server as configured, and for comparison gunicorn's stock gevent worker (shared socket or
# SO_REUSEPORT) and the gthread worker issue 23 replaced (rebuilt from git at GTHREAD_COMMIT).
SERVED = "gevent-balanced"
_STOCK = 'worker_class = "gevent"\n\ndef pre_request(worker, req):\n    pass\n'  # no least connections, no shed
WORKER_MODELS = {
    SERVED: "",
    "gevent": _STOCK,
    "gevent-reuseport": _STOCK + "reuse_port = True\n",
    "gthread": None,
}
GTHREAD_COMMIT = "0d9be9e"
# The compose stack (docker-compose.yml's defaults) through HAProxy, beside the bare servers.
COMPOSE = "compose-haproxy"


def config_file(model: str) -> Path:
    path = TMP / f"gunicorn-hostile-{model}.conf.py"
    extra = WORKER_MODELS[model]
    if extra is None:
        return gthread_config()
    conf = str(ROOT / "server" / "gunicorn.conf.py")
    path.write_text(f"exec(compile(open({conf!r}).read(), {conf!r}, 'exec'))\n{extra}")
    return path


def gthread_config() -> Path:
    """The gthread worker's config and module as they were at GTHREAD_COMMIT (its worker module renamed)."""
    def show(path: str) -> str:
        return subprocess.run(["git", "show", f"{GTHREAD_COMMIT}:{path}"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
    (TMP / "gthread_before.py").write_text(show("server/worker.py"))
    conf = (show("server/gunicorn.conf.py").replace("server.worker", "gthread_before")
            .replace("sys.path.insert(0, str(Path(__file__).resolve().parent.parent))",
                     f"sys.path[:0] = [{str(ROOT)!r}, {str(TMP)!r}]"))
    path = TMP / "gunicorn-hostile-gthread.conf.py"
    path.write_text(conf)
    return path


def ensure_model() -> Path:
    """HOME with a published model: the real trainer on a slice (serving cost does not depend on accuracy)."""
    if (HOME / "mnist").is_dir():
        return HOME
    npz, digest = bench_mnist()
    (HOME / "datasets").mkdir(parents=True, exist_ok=True)
    (HOME / "datasets" / "mnist.npz").write_bytes(npz.read_bytes())
    env = {**os.environ, "MNIST_HOME": str(HOME), "MNIST_SHA256": digest, "EPOCHS": "1", "TRAIN_SUBSET": "4000",
           "MIN_ACCURACY": "0.5", "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", "trainer"], cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    return HOME


# --- bodies ---------------------------------------------------------------------------------------

def v2_json(pixels: list[int] | None = None, images: list[bytes] | None = None) -> bytes:
    if images is not None:
        tensor = {"name": "image", "shape": [len(images)], "datatype": "BYTES",
                  "data": [base64.b64encode(image).decode() for image in images]}
    else:
        tensor = {"name": "pixels", "shape": [1, 28, 28], "datatype": "UINT8", "data": pixels}
    return json.dumps({"inputs": [tensor]}).encode()


def png(width: int, height: int, rows: int | None = None) -> bytes:
    """An 8-bit grey PNG of zeros; with `rows`, only that many rows of data follow a header declaring `height`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    data = zlib.compress(b"\0" * ((width + 1) * (height if rows is None else rows)), 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def webp_lossless(side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (side, side)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


def bomb_bodies() -> list[bytes]:
    """Decompression bombs: a few KB each. One declares far more pixels than allowed (refused from its
    header: 400); the others are exactly at the pixel limit and really decode."""
    from shared.preprocess import MAX_IMAGE_PIXELS

    side = int(MAX_IMAGE_PIXELS ** 0.5)
    return [v2_json(images=[png(50_000, 50_000, rows=4)]), v2_json(images=[png(side, side)]),
            v2_json(images=[webp_lossless(side)])]


# --- hostile clients ----------------------------------------------------------------------------

class Hostile:
    """Runs the mix in threads until stop(); counts what the server did to each kind of client."""

    def __init__(self, port: int, max_body: int, floor: int, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.max_body, self.floor = host, port, max_body, floor
        self.stopping = threading.Event()
        self.counts: dict[str, dict[str, int]] = {kind: {} for kind in MIX}
        self.bombs = bomb_bodies()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(kind,), daemon=True)
                         for kind, count in MIX.items() for _ in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> dict[str, dict[str, int]]:
        self.stopping.set()
        for thread in self._threads:
            thread.join(10)
        return self.counts

    def _count(self, kind: str, outcome: str) -> None:
        with self._lock:
            self.counts[kind][outcome] = self.counts[kind].get(outcome, 0) + 1

    def _loop(self, kind: str) -> None:
        client: Callable[[socket.socket], str] = getattr(self, f"_{kind}")
        while not self.stopping.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    outcome = client(sock)
            except OSError as error:
                outcome = type(error).__name__
            self._count(kind, outcome)
            self.stopping.wait(0.05)

    def _held(self, sock: socket.socket) -> str:
        """Wait, sending nothing more, until the server answers or closes, or the run ends."""
        sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            return _status(data) if data else "closed"
        return "held to the end"

    def _silent(self, sock: socket.socket) -> str:
        return self._held(sock)

    def _slow_headers(self, sock: socket.socket) -> str:
        head = f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Pad: {'a' * 4000}\r\n"
        sock.settimeout(0.2)
        for byte in head.encode():
            if self.stopping.wait(0.2):
                return "held to the end"
            try:
                sock.sendall(bytes([byte]))
                data = sock.recv(4096)  # nothing, unless the server gave up on us
                return _status(data) if data else "closed"
            except TimeoutError:
                continue
        return "sent whole header"

    def _slow_body(self, sock: socket.socket) -> str:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {self.max_body}\r\n\r\n".encode())
        piece, interval = 2048, 2048 / (self.floor * SLOW_BODY_FACTOR)
        sock.settimeout(0.001)
        sent = 0
        while sent < self.max_body and not self.stopping.wait(interval):
            try:
                sock.sendall(b" " * piece)
                sent += piece
                data = sock.recv(4096)
                return _status(data) if data else "closed"
            except TimeoutError:
                continue
        return "held to the end"

    def _bomb(self, sock: socket.socket) -> str:
        body = self.bombs[sum(self.counts["bomb"].values()) % len(self.bombs)]
        sock.settimeout(30)
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        return _status(sock.recv(4096))


def _status(data: bytes) -> str:
    parts = data.split(b" ", 2)
    return parts[1].decode(errors="replace") if len(parts) > 1 and data.startswith(b"HTTP/") else "garbage"


# --- observers ----------------------------------------------------------------------------------

class Prober(threading.Thread):
    """GET /readyz on a fresh connection every PROBE_INTERVAL; a failure counts as PROBE_TIMEOUT."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stopping, self.seconds, self.failures = url + "/readyz", threading.Event(), [], 0

    def run(self) -> None:
        while not self.stopping.wait(PROBE_INTERVAL):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=PROBE_TIMEOUT) as answer:
                    ok = answer.status == 200
            except OSError:
                ok = False
            self.seconds.append(time.perf_counter() - started if ok else PROBE_TIMEOUT)
            self.failures += not ok

    def result(self) -> dict[str, Any]:
        self.stopping.set()
        self.join(PROBE_TIMEOUT + 1)
        ms = sorted(1000 * s for s in self.seconds)
        return {"probes": len(ms), "failed": self.failures, "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(ms[-1], 1)}


class Sampler(threading.Thread):
    """Every worker PID seen, and each one's peak RSS."""

    def __init__(self, target: Target) -> None:
        super().__init__(daemon=True)
        self.target, self.stopping, self.peak_mib = target, threading.Event(), {}
        self.most_on_one: list[int] = []  # per sample: the most established connections one worker held

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            held = []
            for worker in self.target.workers():
                try:
                    self.peak_mib[worker.pid] = max(self.peak_mib.get(worker.pid, 0.0), rss_mib(worker))
                    if self.target.worker_port is not None:
                        held.append(established(worker.pid, self.target.worker_port))
                except (OSError, psutil.Error):
                    pass
            if held:
                self.most_on_one.append(max(held))

    def result(self) -> dict[int, float]:
        self.stopping.set()
        self.join(2)
        return self.peak_mib


# --- server and wrk -------------------------------------------------------------------------------

class Target(Protocol):
    """What the mix and wrk are pointed at: `port` on `host` (`url`), served by `workers()`, which listen on
    `worker_port` (None: their connections are not counted)."""

    url: str
    host: str
    port: int
    worker_port: int | None

    def workers(self) -> list[psutil.Process]: ...


def established(pid: int, port: int) -> int:
    # /proc/<pid>/net/tcp: the process's own network namespace, a container's included.
    sockets = psutil.Process(pid).connections(kind="tcp")
    return sum(1 for c in sockets if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


class Server:
    def __init__(self, model: str, home: Path) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.worker_port = self.port
        self.url = f"http://{self.host}:{self.port}"
        self.log = open(TMP / f"hostile-{model}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(config_file(model)), "server.wsgi:app"], cwd=ROOT,
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **SERVER_ENV, "MNIST_HOME": str(home), "BIND_HOST": "127.0.0.1",
                 "PORT": str(self.port), "TF_CPP_MIN_LOG_LEVEL": "2"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server ({model}) exited; see {self.log.name}")
            try:
                # /readyz answers once one worker is up; until the other has loaded, the first takes everything.
                loaded = Path(self.log.name).read_text(errors="replace").count("serving model version")
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as answer:
                    if answer.status == 200 and loaded >= int(SERVER_ENV["WEB_CONCURRENCY"]):
                        time.sleep(1)  # from the model to the worker's loop, which publishes its count
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server ({model}) not ready; see {self.log.name}")

    def workers(self) -> list[psutil.Process]:
        return children(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def post_lua() -> Path:
    return next(path for path in (ROOT / "bench" / "lib" / "post.lua", ROOT / "bench" / "post.lua") if path.is_file())


def wrk(url: str, body: Path, seconds: int) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s", "-s", str(post_lua()), url + PATH]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True,
                            env={**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": "application/json",
                                 "BENCH_HEADER": ""}).stdout
    raw = json.loads(output.strip().splitlines()[-1])
    return {"requests_per_second": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p99_ms": round(raw["p99_us"] / 1000, 2),
            "failed": raw["socket_errors"] + raw["timeouts"] + raw["non_2xx"]}


def legit_body() -> Path:
    with np.load(bench_mnist()[0]) as archive:
        digit = archive["x_test"][0]
    path = TMP / "hostile-legit.v2.json"
    path.write_bytes(v2_json(pixels=digit.ravel().tolist()))
    return path


def legit_beside_mix(url: str, port: int, clients: int = 4, limit: float = 40) -> dict[str, Any]:
    """The pytest twins' round (no time measured): the mix against `port` and, once a first bomb has been
    answered, `clients` keep-alive clients posting batch-1 v2 JSON one request after another and a /readyz probe
    every half second, until both slow bodies have been cut (the mix's longest cycle; at most `limit` s). What
    every legit request and probe got (a status, or the exception's name) and the mix's counts."""
    import requests

    from server.body import MIN_BYTES_PER_SECOND
    from shared.config import Config

    body, outcomes, probes, done = v2_json(pixels=[0] * 784), [], [], threading.Event()

    def legit() -> None:
        with requests.Session() as session:
            while not done.is_set():
                try:
                    outcomes.append(session.post(url + PATH, data=body, timeout=60,
                                                 headers={"Content-Type": "application/json"}).status_code)
                except requests.RequestException as error:
                    outcomes.append(type(error).__name__)

    def until(condition: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.5)
            if threads:  # probing only once the legit clients run
                try:
                    probes.append(requests.get(url + "/readyz", timeout=30).status_code)
                except requests.RequestException as error:
                    probes.append(type(error).__name__)

    hostile = Hostile(port, Config.from_env().max_body_bytes, MIN_BYTES_PER_SECOND)
    threads: list[threading.Thread] = []
    hostile.start()
    try:
        # The hostile clients take their places first (the slow bodies are sending, the silent ones wait).
        until(lambda: bool(hostile.counts["bomb"]), 60)
        threads += [threading.Thread(target=legit) for _ in range(clients)]
        for thread in threads:
            thread.start()
        until(lambda: sum(hostile.counts["slow_body"].values()) >= MIX["slow_body"], limit)
    finally:
        done.set()
        for thread in threads:
            thread.join()
        counts = hostile.stop()
    return {"legit": outcomes, "probes": probes, "mix": counts}


def run_phase(server: Target, body: Path, hostile: Hostile | None) -> dict[str, Any]:
    prober, sampler = Prober(server.url), Sampler(server)
    prober.start()
    sampler.start()
    if hostile is not None:
        hostile.start()
        time.sleep(SETTLE_SECONDS)
    before = psutil.cpu_times()
    legit = wrk(server.url, body, SECONDS)
    # The whole machine's, so a phase that left cores idle (bound by latency, not CPU) shows as such.
    cpu = psutil.cpu_times()
    busy = 1 - (cpu.idle + cpu.iowait - before.idle - before.iowait) / (sum(cpu) - sum(before))
    counts = hostile.stop() if hostile is not None else None
    peaks = sampler.result()
    return {"legit": legit, "cpu_busy": round(busy, 3), "readyz": prober.result(),
            "peak_rss_mib": sorted(peaks.values(), reverse=True),
            "most_connections_on_one_worker": median(sampler.most_on_one) if sampler.most_on_one else None,
            "pids_seen": sorted(peaks), **({"hostile": counts} if counts is not None else {})}


def both_phases(target: Target, body: Path) -> dict[str, Any]:
    """Clean, then with the mix: the two phases' figures, and the worker PIDs before and after."""
    from server.body import MIN_BYTES_PER_SECOND
    from shared.config import Config

    before = [worker.pid for worker in target.workers()]
    clean = run_phase(target, body, None)
    hostile = run_phase(target, body, Hostile(target.port, Config.from_env().max_body_bytes, MIN_BYTES_PER_SECOND,
                                              target.host))
    after = [worker.pid for worker in target.workers()]
    new_pids = len(set(clean["pids_seen"]) | set(hostile["pids_seen"]) | set(after)) - len(before)
    return {"load_average": load_average(), "clean": clean, "hostile": hostile, "restarts": new_pids,
            "share_of_clean": round(hostile["legit"]["requests_per_second"] / clean["legit"]["requests_per_second"], 3)}


def measure(model: str, home: Path, body: Path) -> dict[str, Any]:
    if model == COMPOSE:
        return measure_compose(home, body)
    server = Server(model, home)
    try:
        return {"model": model, **both_phases(server, body)}
    finally:
        server.stop()


class ComposeTarget:
    """The compose stack through HAProxy: the mix, wrk and the prober go to the proxy's port on the compose network
    (its container's address), as clients arriving on a host's network interface do. Its published loopback port
    would add Docker's userland relay (docker-proxy), one more process on the same cores, which only loopback
    clients on the Docker host pass through."""

    # Not counted: psutil reads connections from the host's /proc/net/tcp, not the container's network namespace;
    # behind the proxy they would be HAProxy's connections anyway, not the clients'.
    worker_port = None

    def __init__(self, stack: Any) -> None:
        self.stack, self.host, self.port = stack, stack.address("proxy"), 8000
        self.url = f"http://{self.host}:{self.port}"
        # Asked once: each `docker compose ps` and `docker inspect` starts a CLI process, and the sampler asks for
        # the workers five times a second, which took a share of the cores the stack is measured on. A container
        # that restarts gets a new master (its old one has no workers left); Docker's RestartCount counts it.
        self.masters = stack.masters()

    def workers(self) -> list[psutil.Process]:
        return [worker for master in self.masters for worker in children(master)]


def measure_compose(home: Path, body: Path) -> dict[str, Any]:
    """docker-compose.yml at its defaults (one server replica of 2 workers, HAProxy in front), seeded with the
    bench's model. Restarts: new worker PIDs, Docker's RestartCount and gunicorn's "Booting worker" lines."""
    with compose_running("mnist-hostile", home / "mnist") as stack:
        counts, boots = stack.restart_counts(), stack.worker_boots()
        result = both_phases(ComposeTarget(stack), body)
        container_restarts = sum(stack.restart_counts().values()) - sum(counts.values())
        booted = stack.worker_boots() - boots
        timeouts = stack.logs().count("WORKER TIMEOUT")
    result["restarts"] = max(result["restarts"], booted) + container_restarts
    return {"model": COMPOSE, **result, "container_restarts": container_restarts, "workers_booted": booted,
            "worker_timeouts_logged": timeouts}


TARGETS = {"share_of_clean": 0.8, "readyz_p99_ms": 50, "restarts": 0, "failed": 0, "peak_rss_mib": 300}


def summarise(runs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Medians over a model's rounds (worst case for failures, restarts and memory)."""
    mine = [run for run in runs if run["model"] == model]
    held = [most for run in mine if (most := run["clean"]["most_connections_on_one_worker"]) is not None]
    return {
        "rounds": len(mine),
        "clean_requests_per_second": median([r["clean"]["legit"]["requests_per_second"] for r in mine]),
        "hostile_requests_per_second": median([r["hostile"]["legit"]["requests_per_second"] for r in mine]),
        "share_of_clean": median([r["share_of_clean"] for r in mine]),
        "clean_p99_ms": median([r["clean"]["legit"]["p99_ms"] for r in mine]),
        "hostile_p99_ms": median([r["hostile"]["legit"]["p99_ms"] for r in mine]),
        "failed": max(r["hostile"]["legit"]["failed"] + r["clean"]["legit"]["failed"] for r in mine),
        # wrk counts no error for requests still unanswered when it stops: a run that answered none stalled.
        "stalled": any(r["hostile"]["legit"]["requests_per_second"] == 0 for r in mine),
        "readyz_p99_ms": median([r["hostile"]["readyz"]["p99_ms"] for r in mine]),
        "readyz_failed": max(r["hostile"]["readyz"]["failed"] for r in mine),
        "restarts": max(r["restarts"] for r in mine),
        "peak_rss_mib": max(max(r["hostile"]["peak_rss_mib"] or [0]) for r in mine),
        "most_connections_on_one_worker": median(held) if held else None,
        # The machine's CPU busy share during wrk (all processes): near 100 %, the phase was bound by CPU.
        "cpu_busy": {phase: median([r[phase].get("cpu_busy", float("nan")) for r in mine])
                     for phase in ("clean", "hostile")},
    }


def main() -> dict[str, Any]:
    models = os.environ.get("BENCH_HOSTILE_MODELS", f"{SERVED},{COMPOSE}").split(",")
    if COMPOSE in models and (reason := docker_unavailable()):
        print(f"bench: {reason}; hostile skips {COMPOSE}", flush=True)
        models.remove(COMPOSE)
    home, body = ensure_model(), legit_body()
    runs = []
    for round_number in range(ROUNDS):
        order = models if round_number % 2 == 0 else models[::-1]  # alternate, so drift on the box is shared
        for model in order:
            result = measure(model, home, body)
            runs.append(result)
            print(json.dumps({key: result[key] for key in ("model", "share_of_clean", "restarts", "load_average")}
                             | {"clean": result["clean"]["legit"], "hostile": result["hostile"]["legit"],
                                "readyz": result["hostile"]["readyz"], "rss": result["hostile"]["peak_rss_mib"],
                                "mix": result["hostile"]["hostile"]}), flush=True)
    figures = {"seconds": SECONDS, "connections": CONNECTIONS, "mix": MIX, "rounds": ROUNDS, "served": SERVED,
               "targets": TARGETS, "models": {model: summarise(runs, model) for model in models}, "runs": runs}
    write_part("hostile", figures)
    return figures


def outcomes(runs: list[dict[str, Any]]) -> str:
    """What each kind of hostile client got, per model, summed over its rounds: "kind: answer n, ..."."""
    got: dict[str, dict[str, Counter[str]]] = {}
    for run in runs:
        for kind, counts in run["hostile"]["hostile"].items():
            got.setdefault(run["model"], {}).setdefault(kind, Counter()).update(counts)
    return "\n".join(f"- {model}: " + "; ".join(
        f"{kind.replace('_', ' ')}: " + ", ".join(f"{answer} {n}" for answer, n in sorted(counts.items()))
        for kind, counts in kinds.items()) for model, kinds in got.items())


def section(figures: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: legit load with and without the hostile mix, per worker model."""
    def ms(value: float | None, stalled: bool = False) -> Any:
        return "-" if stalled or value is None else round(value, 1)

    def busy(phases: dict[str, float] | None) -> str:
        return "-" if not phases else f"{phases['clean']:.0%} / {phases['hostile']:.0%}"

    rows = [[model + (" (served)" if model == figures["served"] else ""), ms(entry["clean_requests_per_second"]),
             ms(entry["hostile_requests_per_second"]), f"{entry['share_of_clean']:.0%}",
             "all stalled" if entry.get("stalled") else entry["failed"], ms(entry["clean_p99_ms"]),
             ms(entry["hostile_p99_ms"], entry.get("stalled", False)), ms(entry["readyz_p99_ms"]),
             entry["readyz_failed"], entry["restarts"], ms(entry["peak_rss_mib"]),
             ms(entry["most_connections_on_one_worker"]), busy(entry.get("cpu_busy"))]
            for model, entry in figures["models"].items()]
    mix = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in figures["mix"].items())
    loads = "; ".join(sorted({run["load_average"] for run in figures["runs"]}))
    return render("hostile", measured=measured(figures), seconds=figures["seconds"],
                  connections=figures["connections"], mix=mix, rounds=figures["rounds"], loads=loads,
                  outcomes=outcomes(figures["runs"]),
                  table=table(["worker model", "clean req/s", "hostile req/s", "share", "failed legit",
                               "clean p99 ms", "hostile p99 ms", "/readyz p99 ms", "/readyz failed", "restarts",
                               "peak RSS/worker MiB", "most conns on 1 worker (of 16)",
                               "box CPU busy clean / hostile"], rows))


if __name__ == "__main__":
    print(json.dumps(main()))
