"""HTTP serving under load: our server against the naive baseline, driven by wrk on 127.0.0.1.

(a) ours: gunicorn with `server/gunicorn.conf.py` and the settings docker-compose.yml gives the
    server container (its defaults: 2 gthread workers x 1 thread, 1 ONNX Runtime thread each);
(b) naive: `bench/naive_server.py` under gunicorn with one sync worker.
Both serve the model `bench.train_bench` published. For each server: seconds from process
start to the first 200 on /readyz, then for batch 1 and 256, JSON and (ours only: the naive
server reads `request.json`) .npy, Open Inference Protocol v2 JSON and v2 binary (what tritonclient
sends by default: raw UINT8 pixels after the JSON, binary outputs), concurrency 1 and 16:
requests/s, images/s, p50/p99. Every
wrk run is bounded by BENCH_HTTP_SECONDS. RSS per worker is read after the load.

When a serving target is missed, py-spy samples our workers under that load and the top
functions go to bench/profile-<case>.txt.

    python -m bench.http_bench   # writes bench/tmp/http.json
"""

from __future__ import annotations

import atexit
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
    TMP,
    bench_mnist,
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
CONTENT_TYPES = {"json": "application/json", "npy": "application/x-npy", "v2json": "application/json",
                 "v2bin": "application/octet-stream"}
# Where each format is posted: the native route, or the Open Inference Protocol v2 infer route.
PATHS = {"json": "/predict", "npy": "/predict", "v2json": "/v2/models/mnist/infer", "v2bin": "/v2/models/mnist/infer"}
V2_HEADER = "Inference-Header-Content-Length"
LUA = ROOT / "bench" / "post.lua"
# docker-compose.yml's server environment, at its defaults (which equal shared/config.py's).
COMPOSE_SERVER_ENV = {"WEB_CONCURRENCY": "2", "THREADS": "1", "INFERENCE_THREADS": "1", "RELOAD_INTERVAL": "2",
                      "MAX_BATCH_SIZE": "1024", "REQUEST_TIMEOUT": "30", "AUTH_TOKEN": ""}
# Parts measured before they recorded their layout ran with THREADS=2, the default until then.
EARLIER_LAYOUT = "2 gthread workers x 2 threads"


def server_layout(env: dict[str, str] = COMPOSE_SERVER_ENV) -> str:
    """The server's processes and threads, as reports name them (saved with each part that starts our server)."""
    return f"{env['WEB_CONCURRENCY']} gthread workers x {env['THREADS']} thread(s)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def v2_bodies(images: np.ndarray) -> tuple[bytes, bytes, int]:
    """(v2 JSON body, v2 binary body, its JSON header's length), as tritonclient sends them by default:
    UINT8 pixels; binary: the JSON, then the raw pixels, and all outputs asked for as binary data."""
    tensor = {"name": "pixels", "shape": list(images.shape), "datatype": "UINT8"}
    as_json = json.dumps({"inputs": [{**tensor, "data": images.ravel().tolist()}]}).encode()
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": images.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return as_json, header + images.tobytes(), len(header)


def write_bodies() -> dict[str, Path]:
    """One file per (format, batch) from the first test digits, as uint8 0..255 pixels.

    A v2 binary body's JSON length (its Inference-Header-Content-Length) is in the file's name."""
    folder = TMP / "bodies"
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(bench_mnist()[0]) as archive:
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
        as_json, binary, header_length = v2_bodies(images)
        bodies[f"v2json-{size}"] = folder / f"batch{size}.v2.json"
        bodies[f"v2json-{size}"].write_bytes(as_json)
        bodies[f"v2bin-{size}"] = folder / f"batch{size}.v2-header{header_length}.bin"
        bodies[f"v2bin-{size}"].write_bytes(binary)
    return bodies


def extra_headers(fmt: str, body: Path) -> dict[str, str]:
    """Headers besides Content-Type: a v2 binary body's Inference-Header-Content-Length."""
    return {V2_HEADER: body.name.split("-header")[1].split(".")[0]} if fmt == "v2bin" else {}


def answered_images(fmt: str, answer: bytes, headers: Any) -> int:
    if fmt in ("json", "npy"):
        return len(json.loads(answer)["predictions"])
    length = int(headers.get(V2_HEADER) or len(answer))
    return json.loads(answer[:length])["outputs"][0]["shape"][0]


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
        atexit.register(self.stop)  # a run that fails midway must not leave a server behind on the shared cores
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

    def check(self, body: Path, content_type: str, count: int, fmt: str = "json") -> None:
        """One request before the load: it must answer 200 with one prediction per image."""
        request = urllib.request.Request(self.url + PATHS[fmt], data=body.read_bytes(),
                                         headers={"Content-Type": content_type, **extra_headers(fmt, body)})
        with urllib.request.urlopen(request, timeout=60) as answer:
            answered = answered_images(fmt, answer.read(), answer.headers)
        if answered != count:
            raise RuntimeError(f"{self.name}: {answered} predictions for {count} images ({fmt})")

    def worker_rss_mib(self) -> list[float]:
        return [rss_mib(pid) for pid in children_of(self.process.pid)]

    def stop(self) -> None:
        if self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def wrk(url: str, body: Path, content_type: str, connections: int, seconds: int, fmt: str = "json") -> dict[str, Any]:
    # One wrk thread: its event loop keeps 16 connections busy and leaves the cores to the server.
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(LUA),
               url + PATHS[fmt]]
    extra = "".join(f"{name}: {value}" for name, value in extra_headers(fmt, body).items())  # one at most
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True,
                            env={**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type,
                                 "BENCH_HEADER": extra}).stdout
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
    with np.load(bench_mnist()[0]) as archive:
        batch = scale_pixels(archive["x_test"][:256])
    return {name: round(256 / float(np.median(time_calls(run, batch))), 1)
            for name, run in onnx_runners(store.version_dir(store.latest()) / ONNX_FILE).items()}


def load_cases(server: Server, bodies: dict[str, Path], formats: tuple[str, ...]) -> dict[str, Any]:
    cases = {}
    for fmt in formats:
        for size in BATCHES:
            body, content_type = bodies[f"{fmt}-{size}"], CONTENT_TYPES[fmt]
            server.check(body, content_type, size, fmt)  # also warms this batch shape up
            for connections in CONCURRENCY:
                raw = wrk(server.url, body, content_type, connections, SECONDS, fmt)
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
    for fmt, wanted in (("npy", 0.8), ("json", 0.5), ("v2bin", 0.9)):
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


def profile(server: Server, body: Path, label: str) -> str | None:
    """Sample every worker with py-spy under concurrency-16 load; write the top functions."""
    spy = py_spy()
    if spy is None:
        return None
    raw = TMP / f"profile-{label}.txt"
    sampler = subprocess.Popen([spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--nonblocking",
                                "--duration", str(PROFILE_SECONDS), "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fmt = label.split("-")[0]
    wrk(server.url, body, CONTENT_TYPES[fmt], 16, PROFILE_SECONDS, fmt)
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
    for stale in [path for fmt in CONTENT_TYPES for path in (ROOT / "bench").glob(f"profile-{fmt}-*.txt")]:
        stale.unlink()  # a profile belongs to the run whose missed target it explains (training's are not ours)
    limit_before = in_process_limit()
    ours_server, ours = measure("ours", ["-c", "server/gunicorn.conf.py", "server.wsgi:app"], COMPOSE_SERVER_ENV,
                                bodies, ("json", "npy", "v2json", "v2bin"))
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
            profiles[label] = profile(ours_server, bodies[label], label)
        if not target["met"]:
            target["profile"] = profiles[label]
    ours_server.stop()
    result = {"seconds_per_case": SECONDS, "layout": server_layout(),
              "in_process_onnx_batch256_images_per_second": limits, "in_process_limit": limit, "ours": ours,
              "naive": naive, "targets": found,
              "load_after": load_average()}
    write_part("http", result)
    return result


def in_process_cpu_ms_per_image(calls: int = 20) -> float:
    """CPU ms per image of the server's own 1-thread ONNX Runtime session at batch 256, scaling included."""
    from bench.inference_bench import onnx_runners
    from shared.model_store import ONNX_FILE, ModelStore
    from shared.preprocess import scale_pixels

    store = ModelStore(BENCH_HOME / "mnist")
    with np.load(bench_mnist()[0]) as archive:
        pixels = archive["x_test"][:256].astype(np.float32)
    run = onnx_runners(store.version_dir(store.latest()) / ONNX_FILE)["onnxruntime (server, 1 thread)"]
    run(scale_pixels(pixels))
    started = time.process_time()
    for _ in range(calls):
        run(scale_pixels(pixels))
    return (time.process_time() - started) * 1000 / (calls * 256)


def workers_cpu_seconds(server: Server) -> float:
    total = 0.0
    for pid in children_of(server.process.pid):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return total


def batch256_rounds(rounds: int, seconds: int = SECONDS) -> dict[str, Any]:
    """Batch 256 in every format of ours, 16 connections, in alternating rounds (the order rotates each round)
    with in-process ONNX Runtime measured in every round too: on shared cores the load drifts within seconds,
    and only figures taken side by side compare. Two shares of in-process per format, medians over rounds:
    wall images/s (vs the best in-process session), and CPU per image (the workers' CPU seconds per image
    served vs the 1-thread session's; CPU time is what other jobs on the cores disturb least)."""
    bodies = write_bodies()
    server = Server("ours", ["-c", "server/gunicorn.conf.py", "server.wsgi:app"], COMPOSE_SERVER_ENV)
    formats = list(CONTENT_TYPES)
    wall: dict[str, list[float]] = {fmt: [] for fmt in formats}
    cpu_share: dict[str, list[float]] = {fmt: [] for fmt in formats}
    limits: list[float] = []
    try:
        for fmt in formats:
            server.check(bodies[f"{fmt}-256"], CONTENT_TYPES[fmt], 256, fmt)
        for round_number in range(rounds):
            limits.append(max(in_process_limit().values()))
            cpu_limit = in_process_cpu_ms_per_image()
            order = formats[round_number % len(formats):] + formats[:round_number % len(formats)]
            for fmt in order:
                cpu_before = workers_cpu_seconds(server)
                raw = wrk(server.url, bodies[f"{fmt}-256"], CONTENT_TYPES[fmt], 16, seconds, fmt)
                cpu_ms = (workers_cpu_seconds(server) - cpu_before) * 1000 / max(raw["requests"] * 256, 1)
                failed = raw["socket_errors"] + raw["timeouts"] + raw["non_2xx"]
                if failed:
                    raise RuntimeError(f"{fmt}: {failed} of {raw['requests']} requests failed; see {server.log.name}")
                wall[fmt].append(round(raw["requests"] / (raw["duration_us"] / 1e6) * 256, 1))
                cpu_share[fmt].append(round(cpu_limit / cpu_ms, 3))
                print(f"bench: round {round_number + 1} {fmt:6s} batch 256 c16 {wall[fmt][-1]:8.1f} images/s"
                      f" (in-process {limits[-1]}); CPU {cpu_ms:.4f} ms/image (in-process {cpu_limit:.4f})",
                      flush=True)
    finally:
        server.stop()
    limit = float(np.median(limits))
    result = {"rounds": rounds, "seconds_per_case": seconds, "in_process_limits": limits,
              "images_per_second": wall,
              "median_images_per_second": {fmt: float(np.median(values)) for fmt, values in wall.items()},
              "median_share_of_in_process": {fmt: round(float(np.median(values)) / limit, 3)
                                             for fmt, values in wall.items()},
              "cpu_share_of_in_process": cpu_share,
              "median_cpu_share_of_in_process": {fmt: float(np.median(values)) for fmt, values in cpu_share.items()},
              "load_after": load_average()}
    write_part("http-batch256", result)
    return result


def through_the_app(rounds: int = 5, calls: int = 20) -> dict[str, Any]:
    """CPU ms per batch-256 request through the whole app in this one thread (Flask's test client: route,
    codec decode, data plane with the real 1-thread ONNX Runtime session, codec encode), per format,
    beside the ONNX Runtime call alone; no sockets, so the shared cores' load disturbs it least."""
    from server.app import create_app
    from shared.config import Config
    from shared.preprocess import scale_pixels

    bodies = write_bodies()
    app = create_app(Config(home=BENCH_HOME, inference_threads=1), watch=False)
    plane = app.extensions["mnist"].plane
    plane.manager.poll()
    model = plane.model()
    client = app.test_client()
    requests = {fmt: (PATHS[fmt], bodies[f"{fmt}-256"].read_bytes(),
                      {"Content-Type": CONTENT_TYPES[fmt], **extra_headers(fmt, bodies[f"{fmt}-256"])})
                for fmt in CONTENT_TYPES}
    with np.load(bench_mnist()[0]) as archive:
        pixels = archive["x_test"][:256].astype(np.float32)

    def cpu_ms(call: Any) -> float:
        call()
        started = time.process_time()
        for _ in range(calls):
            call()
        return (time.process_time() - started) * 1000 / calls

    def post(fmt: str) -> None:
        path, data, headers = requests[fmt]
        if client.post(path, data=data, headers=headers).status_code != 200:
            raise RuntimeError(f"{fmt}: not 200")

    figures: dict[str, list[float]] = {"onnxruntime alone": [], **{fmt: [] for fmt in CONTENT_TYPES}}
    for _ in range(rounds):
        figures["onnxruntime alone"].append(cpu_ms(lambda: model.model.predict(scale_pixels(pixels))))
        for fmt in CONTENT_TYPES:
            figures[fmt].append(cpu_ms(lambda fmt=fmt: post(fmt)))
    medians = {name: round(float(np.median(values)), 2) for name, values in figures.items()}
    alone = medians["onnxruntime alone"]
    result = {"rounds": rounds, "calls": calls, "cpu_ms_per_batch256": figures, "median_cpu_ms": medians,
              "share_of_onnxruntime_alone": {fmt: round(alone / medians[fmt], 3) for fmt in CONTENT_TYPES},
              "load_after": load_average()}
    write_part("http-app-cpu", result)
    return result


if __name__ == "__main__":
    # `python -m bench.http_bench 3`: only the batch-256 formats over HTTP, 3 alternating rounds;
    # `python -m bench.http_bench app`: CPU per batch-256 request through the app in-process.
    if len(sys.argv) > 1:
        print(json.dumps(through_the_app() if sys.argv[1] == "app" else batch256_rounds(int(sys.argv[1]))))
    else:
        print(json.dumps(main()))
