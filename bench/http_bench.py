"""HTTP serving under load: our server against the naive baseline, driven by wrk on 127.0.0.1.

(a) ours: gunicorn with `server/gunicorn.conf.py` and the settings docker-compose.yml gives the
    server container (its defaults: 2 gthread workers x 4 threads, 1 ONNX Runtime thread each);
(b) naive: `bench/naive_server.py` under gunicorn with one sync worker.
Both serve the model `bench.train_bench` published. For each server: seconds from process
start to the first 200 on /readyz, then for batch 1 and 256, JSON and (ours only: the naive
server reads `request.json`) .npy, concurrency 1 and 16: requests/s, images/s, p50/p99. Every
wrk run is bounded by BENCH_HTTP_SECONDS. RSS per worker is read after the load.

When a serving target is missed, py-spy samples our workers under that load and the top
functions go to bench/profile-<case>.txt.

    python -m bench.http_bench   # writes bench/tmp/http.json
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BENCH_HOME,
    ROOT,
    SHARED_MNIST,
    TMP,
    children_of,
    load_average,
    py_spy,
    rss_mib,
    summarise_profile,
    write_part,
)

SECONDS = int(os.environ.get("BENCH_HTTP_SECONDS", "8"))
PROFILE_SECONDS = 6
BATCHES = (1, 256)
CONCURRENCY = (1, 16)
CONTENT_TYPES = {"json": "application/json", "npy": "application/x-npy"}
LUA = ROOT / "bench" / "post.lua"
# docker-compose.yml's server environment, at its defaults (which equal shared/config.py's).
COMPOSE_SERVER_ENV = {"WEB_CONCURRENCY": "2", "THREADS": "4", "INFERENCE_THREADS": "1", "RELOAD_INTERVAL": "2",
                      "MAX_BATCH_SIZE": "1024", "REQUEST_TIMEOUT": "30", "AUTH_TOKEN": ""}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_bodies() -> dict[str, Path]:
    """One file per (format, batch) from the first test digits, as uint8 0..255 pixels."""
    folder = TMP / "bodies"
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(SHARED_MNIST) as archive:
        x_test = archive["x_test"]
    bodies = {}
    for size in BATCHES:
        images = x_test[:size]
        bodies[f"json-{size}"] = folder / f"batch{size}.json"
        bodies[f"json-{size}"].write_text(json.dumps({"instances": images.tolist()}))
        buffer = io.BytesIO()
        np.save(buffer, images)
        bodies[f"npy-{size}"] = folder / f"batch{size}.npy"
        bodies[f"npy-{size}"].write_bytes(buffer.getvalue())
    return bodies


class Server:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(TMP / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", *(arg.format(port=self.port) for arg in argv)],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "MNIST_HOME": str(BENCH_HOME), "TF_CPP_MIN_LOG_LEVEL": "2",
                 "BIND_HOST": "127.0.0.1", "PORT": str(self.port), **env},
        )
        self.ready_seconds = round(self._wait_ready(started), 2)

    def _wait_ready(self, started: float, timeout: float = 180) -> float:
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.name} not ready after {timeout} s; see {self.log.name}")

    def check(self, body: Path, content_type: str, count: int) -> None:
        """One request before the load: it must answer 200 with one prediction per image."""
        request = urllib.request.Request(self.url + "/predict", data=body.read_bytes(),
                                         headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as answer:
            predictions = json.load(answer)["predictions"]
        if len(predictions) != count:
            raise RuntimeError(f"{self.name}: {len(predictions)} predictions for {count} images")

    def worker_rss_mib(self) -> list[float]:
        return [rss_mib(pid) for pid in children_of(self.process.pid)]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def wrk(url: str, body: Path, content_type: str, connections: int, seconds: int) -> dict[str, Any]:
    # One wrk thread: its event loop keeps 16 connections busy and leaves the cores to the server.
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(LUA), url + "/predict"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True,
                            env={**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type}).stdout
    return json.loads(output.strip().splitlines()[-1])


def in_process_limit() -> dict[str, float]:
    """In-process ONNX Runtime images/s at batch 256, measured right next to the HTTP runs.

    The machine is shared, so a limit taken minutes earlier (bench.inference_bench) can be off by
    a factor; the ratio targets use this adjacent figure (best of the 1- and 2-thread sessions).
    """
    from bench.inference_bench import onnx_runners, time_calls
    from shared.model_store import ONNX_FILE, ModelStore
    from shared.preprocess import scale_pixels

    store = ModelStore(BENCH_HOME / "mnist")
    with np.load(SHARED_MNIST) as archive:
        batch = scale_pixels(archive["x_test"][:256])
    return {name: round(256 / float(np.median(time_calls(run, batch))), 1)
            for name, run in onnx_runners(store.version_dir(store.latest()) / ONNX_FILE).items()}


def load_cases(server: Server, bodies: dict[str, Path], formats: tuple[str, ...]) -> dict[str, Any]:
    cases = {}
    for fmt in formats:
        for size in BATCHES:
            body, content_type = bodies[f"{fmt}-{size}"], CONTENT_TYPES[fmt]
            server.check(body, content_type, size)  # also warms this batch shape up
            for connections in CONCURRENCY:
                raw = wrk(server.url, body, content_type, connections, SECONDS)
                per_second = raw["requests"] / (raw["duration_us"] / 1e6)
                case = {
                    "requests_per_second": round(per_second, 1),
                    "images_per_second": round(per_second * size, 1),
                    "p50_ms": round(raw["p50_us"] / 1000, 2),
                    "p99_ms": round(raw["p99_us"] / 1000, 2),
                    "requests": raw["requests"],
                    "errors": raw["socket_errors"] + raw["timeouts"] + raw["non_2xx"],
                    "load_after": load_average(),
                }
                name = f"{fmt} batch {size} c{connections}"
                print(f"bench: {server.name:6s} {name:20s} {case['requests_per_second']:8.1f} req/s"
                      f" {case['images_per_second']:9.1f} images/s p50 {case['p50_ms']:8.2f} ms"
                      f" p99 {case['p99_ms']:8.2f} ms errors {case['errors']}", flush=True)
                cases[name] = case
    return cases


def best(cases: dict[str, Any], fmt: str, size: int) -> float:
    return max(cases[f"{fmt} batch {size} c{c}"]["images_per_second"] for c in CONCURRENCY)


def targets(ours: dict[str, Any], naive: dict[str, Any], limit: float) -> dict[str, Any]:
    """The issue's serving targets, as measured ratios (never asserted: they are reported)."""
    found: dict[str, Any] = {}
    for fmt, wanted in (("npy", 0.8), ("json", 0.5)):
        ratio = best(ours, fmt, 256) / limit
        found[f"batch 256 {fmt} vs in-process ONNX"] = {"ratio": round(ratio, 3), "target": f">= {wanted}",
                                                         "met": ratio >= wanted, "profile_case": f"{fmt}-256"}
    case = "json batch 1 c16"
    throughput = ours[case]["requests_per_second"] / naive[case]["requests_per_second"]
    found["batch 1 c16 req/s vs naive"] = {"ratio": round(throughput, 2), "target": ">= 3",
                                           "met": throughput >= 3, "profile_case": "json-1"}
    tail = ours[case]["p99_ms"] / naive[case]["p99_ms"]
    found["batch 1 c16 p99 vs naive"] = {"ratio": round(tail, 3), "target": "<= 0.333",
                                         "met": tail <= 1 / 3, "profile_case": "json-1"}
    return found


def profile(server: Server, body: Path, content_type: str, label: str) -> str | None:
    """Sample every worker with py-spy under concurrency-16 load; write the top functions."""
    spy = py_spy()
    if spy is None:
        return None
    raw = TMP / f"profile-{label}.txt"
    sampler = subprocess.Popen([spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--nonblocking",
                                "--duration", str(PROFILE_SECONDS), "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wrk(server.url, body, content_type, 16, PROFILE_SECONDS)
    if sampler.wait(60) != 0 or not raw.is_file():
        return None
    summary = ROOT / "bench" / f"profile-{label}.txt"
    summary.write_text(summarise_profile(raw.read_text(), f"py-spy, {label}, concurrency 16, {PROFILE_SECONDS} s"))
    return str(summary.relative_to(ROOT))


def measure(name: str, argv: list[str], env: dict[str, str], bodies: dict[str, Path],
            formats: tuple[str, ...]) -> tuple[Server, dict[str, Any]]:
    print(f"bench: starting {name} server, load {load_average()}", flush=True)
    server = Server(name, argv, env)
    print(f"bench: {name} ready in {server.ready_seconds} s", flush=True)
    cases = load_cases(server, bodies, formats)
    return server, {"start_to_ready_seconds": server.ready_seconds, "cases": cases}


def main() -> dict[str, Any]:
    bodies = write_bodies()
    for stale in (ROOT / "bench").glob("profile-*.txt"):
        stale.unlink()  # a profile belongs to the run whose missed target it explains
    limit_before = in_process_limit()
    ours_server, ours = measure("ours", ["-c", "server/gunicorn.conf.py", "server.wsgi:app"], COMPOSE_SERVER_ENV,
                                bodies, ("json", "npy"))
    naive_server, naive = measure("naive", ["-w", "1", "-k", "sync", "--bind", "127.0.0.1:{port}",
                                            "bench.naive_server:app"], {}, bodies, ("json",))
    naive["worker_rss_mib"] = naive_server.worker_rss_mib()
    ours["worker_rss_mib"] = ours_server.worker_rss_mib()
    ours["master_rss_mib"] = rss_mib(ours_server.process.pid)
    naive_server.stop()
    # Before and after the load runs: the lower of the two bests would flatter the server.
    limits = {"before": limit_before, "after": in_process_limit()}
    limit = max(max(figures.values()) for figures in limits.values())
    found = targets(ours["cases"], naive["cases"], limit)
    profiles: dict[str, str | None] = {}  # two missed targets may share one load case: profile it once
    for target in found.values():
        label = target["profile_case"]
        if not target["met"] and label not in profiles:
            profiles[label] = profile(ours_server, bodies[label], CONTENT_TYPES[label.split("-")[0]], label)
        if not target["met"]:
            target["profile"] = profiles[label]
    ours_server.stop()
    result = {"seconds_per_case": SECONDS, "in_process_onnx_batch256_images_per_second": limits,
              "in_process_limit": limit, "ours": ours, "naive": naive, "targets": found,
              "load_after": load_average()}
    write_part("http", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
