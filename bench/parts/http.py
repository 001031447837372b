"""HTTP serving under load: our server against the naive baseline, driven by wrk on 127.0.0.1.

(a) ours: gunicorn with `server/gunicorn.conf.py` and the settings docker-compose.yml gives the
    server container (its defaults: 2 gevent workers x 1 compute thread, 1 ONNX Runtime thread each);
(b) naive: `bench/naive_server.py` under gunicorn with one sync worker.
Both serve the model `bench.parts.training` published. For each server: seconds from process
start to the first 200 on /readyz, then for batch 1 and 256, JSON and (ours only: the naive
server reads `request.json`) .npy, Open Inference Protocol v2 JSON and v2 binary (what tritonclient
sends by default: raw UINT8 pixels after the JSON, binary outputs), concurrency 1 and 16:
requests/s, images/s, p50/p99. Every
wrk run is bounded by BENCH_HTTP_SECONDS. RSS per worker is read after the load.

When a serving target is missed, py-spy samples our workers under that load and the top
functions go to bench/results/profiles/profile-<case>.txt.

    python -m bench.parts.http   # writes bench/results/tmp/http.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import psutil

from bench.common import (
    BENCH_HOME,
    PROFILES,
    ROOT,
    TMP,
    load_average,
    py_spy,
    summarise_profile,
    write_part,
)
from bench.lib.bodies import V2_HEADER, native_json, npy, test_digits, v2_binary, v2_json, write
from bench.lib.ours import COMPOSE_SERVER_ENV, EARLIER_LAYOUT, V2_INFER, published, server_layout
from bench.lib.processes import Launch, Running, cpu_seconds, free_port, rss_mib
from bench.lib.wrk import Body, errors, figures, requests_per_second
from bench.lib.wrk import wrk as run_wrk
from bench.report import Parts, measured, render, table

SECONDS = int(os.environ.get("BENCH_HTTP_SECONDS", "8"))
PROFILE_SECONDS = 6
BATCHES = (1, 256)
CONCURRENCY = (1, 16)
CONTENT_TYPES = {"json": "application/json", "npy": "application/x-npy", "v2json": "application/json",
                 "v2bin": "application/octet-stream"}
# Where each format is posted: the native route, or the Open Inference Protocol v2 infer route.
PATHS = {"json": "/predict", "npy": "/predict", "v2json": V2_INFER, "v2bin": V2_INFER}


def write_bodies() -> dict[str, Body]:
    """One body per (format, batch) from the first test digits, as uint8 0..255 pixels; v2 binary asks for
    binary outputs, as tritonclient does by default."""
    folder = TMP / "bodies"
    x_test = test_digits(max(BATCHES))
    found = {}
    for size in BATCHES:
        images = x_test[:size]
        binary, header_length = v2_binary(images, parameters={"binary_data_output": True})
        found[f"json-{size}"] = write(folder / f"batch{size}.json", native_json(images), CONTENT_TYPES["json"])
        found[f"npy-{size}"] = write(folder / f"batch{size}.npy", npy(images), CONTENT_TYPES["npy"])
        found[f"v2json-{size}"] = write(folder / f"batch{size}.v2.json", v2_json(images), CONTENT_TYPES["v2json"])
        found[f"v2bin-{size}"] = write(folder / f"batch{size}.v2.bin", binary, CONTENT_TYPES["v2bin"],
                                       f"{V2_HEADER}: {header_length}")
    return found


def answered_images(fmt: str, answer: bytes, headers: Any) -> int:
    if fmt in ("json", "npy"):
        return len(json.loads(answer)["predictions"])
    length = int(headers.get(V2_HEADER) or len(answer))
    return json.loads(answer[:length])["outputs"][0]["shape"][0]


class Server(Running):
    """A gunicorn server (ours, or the naive one) on a free port, timed from start to ready."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        port = free_port()
        command = [sys.executable, "-m", "gunicorn", *(arg.format(port=port) for arg in argv)]
        super().__init__(Launch(name, command, "/readyz", env={
            "MNIST_HOME": str(BENCH_HOME), "TF_CPP_MIN_LOG_LEVEL": "2", "BIND_HOST": "127.0.0.1", "PORT": str(port),
            **env}), port)

    def check(self, body: Body, count: int, fmt: str = "json") -> None:
        """One request before the load: it must answer 200 with one prediction per image."""
        answered = answered_images(fmt, *self.request(PATHS[fmt], body))
        if answered != count:
            raise RuntimeError(f"{self.launch.name}: {answered} predictions for {count} images ({fmt})")

    def worker_rss_mib(self) -> list[float]:
        return [rss_mib(worker) for worker in self.workers()]


def wrk(url: str, body: Body, connections: int, seconds: int, fmt: str = "json") -> dict[str, Any]:
    return run_wrk(url + PATHS[fmt], body, connections, seconds)


def in_process_limit() -> dict[str, float]:
    """In-process ONNX Runtime images/s at batch 256, measured right next to the HTTP runs.

    The machine is shared, so a limit taken minutes earlier (bench.parts.inference) can be off by
    a factor; the ratio targets use this adjacent figure (best of the 1- and 2-thread sessions).
    """
    from bench.parts.inference import onnx_runners, time_calls
    from shared.preprocess import scale_pixels

    batch = scale_pixels(test_digits(256))
    return {name: round(256 / float(np.median(time_calls(run, batch))), 1)
            for name, run in onnx_runners(published()).items()}


def load_cases(server: Server, bodies: dict[str, Body], formats: tuple[str, ...]) -> dict[str, Any]:
    cases = {}
    for fmt in formats:
        for size in BATCHES:
            body = bodies[f"{fmt}-{size}"]
            server.check(body, size, fmt)  # also warms this batch shape up
            for connections in CONCURRENCY:
                raw = wrk(server.url, body, connections, SECONDS, fmt)
                case = {**figures(raw, size), "requests": raw["requests"], "load_after": load_average()}
                name = f"{fmt} batch {size} c{connections}"
                print(f"bench: {server.launch.name:6s} {name:20s} {case['requests_per_second']:8.1f} req/s"
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


def profile(server: Server, body: Body, label: str) -> str | None:
    """Sample every worker with py-spy under concurrency-16 load; write the top functions."""
    spy = py_spy()
    if spy is None:
        return None
    raw = TMP / f"profile-{label}.txt"
    sampler = subprocess.Popen([spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--nonblocking",
                                "--duration", str(PROFILE_SECONDS), "--format", "raw", "--output", str(raw)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fmt = label.split("-")[0]
    wrk(server.url, body, 16, PROFILE_SECONDS, fmt)
    if sampler.wait(60) != 0 or not raw.is_file():
        return None
    summary = PROFILES / f"profile-{label}.txt"
    summary.write_text(summarise_profile(raw.read_text(), f"py-spy, {label}, concurrency 16, {PROFILE_SECONDS} s"))
    return str(summary.relative_to(ROOT))


def measure(name: str, argv: list[str], env: dict[str, str], bodies: dict[str, Body],
            formats: tuple[str, ...]) -> tuple[Server, dict[str, Any]]:
    print(f"bench: starting {name} server, load {load_average()}", flush=True)
    server = Server(name, argv, env)
    print(f"bench: {name} ready in {server.ready_seconds} s", flush=True)
    cases = load_cases(server, bodies, formats)
    return server, {"start_to_ready_seconds": server.ready_seconds, "cases": cases}


def main() -> dict[str, Any]:
    bodies = write_bodies()
    for stale in [path for fmt in CONTENT_TYPES for path in PROFILES.glob(f"profile-{fmt}-*.txt")]:
        stale.unlink()  # a profile belongs to the run whose missed target it explains (training's are not ours)
    limit_before = in_process_limit()
    ours_server, ours = measure("ours", ["-c", "server/gunicorn.conf.py", "server.wsgi:app"], COMPOSE_SERVER_ENV,
                                bodies, ("json", "npy", "v2json", "v2bin"))
    naive_server, naive = measure("naive", ["-w", "1", "-k", "sync", "--bind", "127.0.0.1:{port}",
                                            "bench.naive_server:app"], {}, bodies, ("json",))
    naive["worker_rss_mib"] = naive_server.worker_rss_mib()
    ours["worker_rss_mib"] = ours_server.worker_rss_mib()
    ours["master_rss_mib"] = rss_mib(psutil.Process(ours_server.process.pid))
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
    from bench.parts.inference import onnx_runners
    from shared.preprocess import scale_pixels

    pixels = test_digits(256).astype(np.float32)
    run = onnx_runners(published())["onnxruntime (server, 1 thread)"]
    run(scale_pixels(pixels))
    started = time.process_time()
    for _ in range(calls):
        run(scale_pixels(pixels))
    return (time.process_time() - started) * 1000 / (calls * 256)


def workers_cpu_seconds(server: Server) -> float:
    return sum(cpu_seconds(server.workers()).values())


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
            server.check(bodies[f"{fmt}-256"], 256, fmt)
        for round_number in range(rounds):
            limits.append(max(in_process_limit().values()))
            cpu_limit = in_process_cpu_ms_per_image()
            order = formats[round_number % len(formats):] + formats[:round_number % len(formats)]
            for fmt in order:
                cpu_before = workers_cpu_seconds(server)
                raw = wrk(server.url, bodies[f"{fmt}-256"], 16, seconds, fmt)
                cpu_ms = (workers_cpu_seconds(server) - cpu_before) * 1000 / max(raw["requests"] * 256, 1)
                failed = errors(raw)
                if failed:
                    raise RuntimeError(f"{fmt}: {failed} of {raw['requests']} requests failed; see {server.log.name}")
                wall[fmt].append(round(requests_per_second(raw) * 256, 1))
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
    requests = {fmt: (PATHS[fmt], bodies[f"{fmt}-256"].path.read_bytes(), bodies[f"{fmt}-256"].headers())
                for fmt in CONTENT_TYPES}
    pixels = test_digits(256).astype(np.float32)

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


def section(http: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: every case of both servers, their start and memory, the in-process limit."""
    servers = ("ours", "naive")
    cases = [[server, case, figures["requests_per_second"], figures["images_per_second"], figures["p50_ms"],
              figures["p99_ms"], figures["errors"]] for server in servers
             for case, figures in http[server]["cases"].items()]
    about = [[server, http[server]["start_to_ready_seconds"], ", ".join(map(str, http[server]["worker_rss_mib"]))]
             for server in servers]
    limits = "; ".join(f"{when}: " + ", ".join(f"{name} {value}" for name, value in figures.items())
                       for when, figures in http["in_process_onnx_batch256_images_per_second"].items())
    return render("http", seconds=http["seconds_per_case"], measured=measured(http),
                  layout=http.get("layout", EARLIER_LAYOUT),
                  cases=table(["server", "case", "req/s", "images/s", "p50 ms", "p99 ms", "errors"], cases),
                  servers=table(["server", "start to ready s", "RSS per worker MiB"], about),
                  limits=limits, limit=http["in_process_limit"])


if __name__ == "__main__":
    # `python -m bench.parts.http 3`: only the batch-256 formats over HTTP, 3 alternating rounds;
    # `python -m bench.parts.http app`: CPU per batch-256 request through the app in-process.
    if len(sys.argv) > 1:
        print(json.dumps(through_the_app() if sys.argv[1] == "app" else batch256_rounds(int(sys.argv[1]))))
    else:
        print(json.dumps(main()))
