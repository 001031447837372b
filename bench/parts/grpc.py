"""gRPC under load: our GRPCInferenceService against KServe's and PyTriton's gRPC servers, same model, same messages.

    python -m bench.run --only grpc     # part of `make bench-peers`; the model `make bench` trained
    BENCH_GRPC_HOME=<a MNIST_HOME holding mnist/N/model.onnx> python -m bench.parts.grpc

Cases (raw_input_contents, UINT8, what tritonclient sends by default):
    A  batch 1    at 1 and 16 concurrent streams
    C  batch 256  at 1 and 4 concurrent streams
The load generator is h2load (bench/lib/h2load.py: C, one thread, the prepared message framed as gRPC sends
it): each stream its own TCP connection, one call after another, for BENCH_SECONDS after BENCH_WARMUP, every
call checked to have brought the server's answer back. It shares the machine's cores with the servers, and
its own CPU share is reported beside each case (a client near 100 % of a core is the limit, not the server).
It replaced a grpc.aio client in this process, which took several times its CPU (docs/grpc.md, "Benchmark").
Each of BENCH_ROUNDS rounds starts every server afresh, in an order that alternates between rounds, and
measures beside them our HTTP server at batch 1 (wrk, native JSON /predict, the headline's case) and
in-process ONNX Runtime at batch 256, the two figures the targets divide by. Figures are medians over rounds.
Peers, each as its HTTP benchmark runs it (bench/parts/peers.py): KServe 0.21 (this venv,
bench/peers/kserve_server.py with PEER_GRPC_PORT, 2 workers) and PyTriton 0.7 (its own venv, Triton's C++
gRPC front end, 2 model instances, dynamic batching).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from bench import empty_servers
from bench.common import BENCH_HOME, ROOT, TMP, bench_mnist, load_average, write_part
from bench.lib import h2load
from bench.lib.bodies import native_json, test_digits, write
from bench.lib.ours import launch as launch_http
from bench.lib.processes import Launch, Running, free_port
from bench.lib.wrk import Body, wrk
from bench.lib.wrk import figures as wrk_figures
from bench.report import Parts, measured, render, table
from server.protocols import v2_grpc_messages as pb

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CASES = (("A c1", 1, 1), ("A c16", 1, 16), ("C c1", 256, 1), ("C c4", 256, 4))
HTTP_CONNECTIONS = (1, 16)  # our HTTP batch 1 at the gRPC batch-1 cases' concurrency
READY_TIMEOUT = 120
# Ours as compose runs the grpc service (docker-compose.yml), on the benchmark's model.
OURS_ENV = {"INFERENCE_THREADS": "1", "GRPC_THREADS": "8", "GRPC_PROCESSES": "2", "BIND_HOST": "127.0.0.1",
            "LOG_FORMAT": "json"}
PEERS = {"kserve": "KServe 0.21 gRPC server, 2 workers", "pytriton": "PyTriton 0.7 (Triton's C++ gRPC front end), "
         "2 model instances, dynamic batching"}


def request(images: np.ndarray) -> Any:
    message = pb.ModelInferRequest(model_name="mnist")
    message.inputs.add(name="pixels", datatype="UINT8", shape=list(images.shape))
    message.raw_input_contents.append(np.ascontiguousarray(images, np.uint8).tobytes())
    return message


def wait_ready(address: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    with grpc.insecure_channel(address) as channel:
        ready = channel.unary_unary(f"/{pb.SERVICE}/ModelReady",
                                    request_serializer=pb.ModelReadyRequest.SerializeToString,
                                    response_deserializer=pb.ModelReadyResponse.FromString)
        while time.monotonic() < deadline:
            assert process.poll() is None, f"server exited with {process.returncode}"
            try:
                if ready(pb.ModelReadyRequest(name="mnist"), timeout=2).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    raise TimeoutError(f"{address} not ready in {READY_TIMEOUT} s")


def servers(home: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    from bench.parts.peers import ensure_venv, peer_python

    model = sorted((home / "mnist").glob("*/model.onnx"))[-1]
    peer = {"PEER_MODEL": str(model), "PEER_WORKERS": "2", "PEER_PORT": str(free_port())}
    ensure_venv("pytriton")
    return {
        "ours": ([str(ROOT / ".venv" / "bin" / "python"), "-m", "server.transports.grpc_server"],
                 {"MNIST_HOME": str(home), **OURS_ENV}),
        "kserve": ([str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "bench" / "peers" / "kserve_server.py")], peer),
        "pytriton": ([peer_python("pytriton"), str(ROOT / "bench" / "peers" / "pytriton_server.py")], peer),
    }


def check_answer(address: str, images: np.ndarray, expected: np.ndarray) -> int:
    """Every server must answer the digits right (the same model) before anything is timed; the answer's size
    in bytes, which h2load then counts once per call (bench/lib/h2load.py)."""
    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=None)
        raw_answer = infer(request(images), timeout=30)
    answer = pb.ModelInferResponse.FromString(raw_answer)
    names = [output.name for output in answer.outputs]
    at = names.index("probabilities")
    raw = answer.raw_output_contents
    values = np.frombuffer(raw[at], "<f4") if raw else np.array(answer.outputs[at].contents.fp32_contents, np.float32)
    agree = (values.reshape(len(images), 10).argmax(axis=1) == expected[:len(images)]).mean()
    assert agree >= 0.8, (names, agree)  # a trained model: a wrong input layout would score about 0.1
    return len(raw_answer)


@contextlib.contextmanager
def started(name: str, argv: list[str], env: dict[str, str]) -> Iterator[str]:
    """A gRPC server on a free port, logging to TMP/grpc-`name`.log, until the block ends: its address, once ready."""
    port = free_port()
    env = {**os.environ, **env, "GRPC_PORT": str(port), "PEER_GRPC_PORT": str(port),
           "GRPC_METRICS_PORT": str(free_port())}
    log = open(TMP / f"grpc-{name}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        wait_ready(address, process)
        yield address
    finally:
        for child in psutil.Process(process.pid).children(recursive=True):  # kserve and Triton have children
            child.terminate()
        process.terminate()
        process.wait(30)
        log.close()


def run_server(name: str, argv: list[str], env: dict[str, str], bodies: dict[int, Path], digits: np.ndarray,
               labels: np.ndarray) -> dict[str, Any]:
    with started(name, argv, env) as address:
        answer_bytes = {size: check_answer(address, digits[:size], labels) for size in bodies}
        found = {}
        for case, size, streams in CASES:
            figures = h2load.load(f"http://{address}/{pb.SERVICE}/ModelInfer", bodies[size], answer_bytes[size],
                                  streams, SECONDS, WARMUP)
            found[case] = {**figures, "load_after": load_average()}
            print(f"bench: grpc {name:8} {case:6} {found[case]}", flush=True)
        return found


def ours_http(home: Path, body: Body) -> dict[str, Any]:
    """Our gunicorn server (compose's layout) at batch 1, native JSON on /predict, as the headline measures it."""
    port = free_port()
    running = Running(launch_http("ours-http", port, MNIST_HOME=str(home)), port)
    try:
        running.post("/predict", body)
        found = {}
        for connections in HTTP_CONNECTIONS:
            found[f"c{connections}"] = wrk_figures(wrk(running.url + "/predict", body, connections, int(SECONDS)), 1)
            print(f"bench: http ours batch 1 c{connections} {found[f'c{connections}']}", flush=True)
        return found
    finally:
        running.stop()


def floors(grpc_body: Path, http_body: Body) -> dict[str, float]:
    """Calls/s of the empty servers (bench/empty_servers.py), one process each: grpc.aio under h2load and
    gunicorn's gevent worker under wrk, with the bodies ours get, at 1 and 16 connections."""
    found = {}
    with started("empty", [sys.executable, "-m", "bench.empty_servers"], {}) as address:
        for streams in HTTP_CONNECTIONS:
            found[f"grpc c{streams}"] = h2load.load(f"http://{address}/{pb.SERVICE}/ModelInfer", grpc_body,
                                                    len(empty_servers.ANSWER), streams, SECONDS, WARMUP)["calls_per_s"]
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{port}",
               "bench.empty_servers:app"]
    running = Running(Launch("empty-http", command, "/readyz"), port)
    try:
        for streams in HTTP_CONNECTIONS:
            raw = wrk(running.url + "/predict", http_body, streams, int(SECONDS))
            found[f"http c{streams}"] = wrk_figures(raw, 1)["requests_per_second"]
    finally:
        running.stop()
    print(f"bench: grpc empty servers {found}", flush=True)
    return found


def in_process(home: Path) -> float:
    """In-process ONNX Runtime images/s at batch 256, the best of the 1- and 2-thread sessions."""
    from bench.parts.inference import onnx_runners, time_calls
    from shared.preprocess import scale_pixels

    batch = scale_pixels(test_digits(256))
    model = sorted((home / "mnist").glob("*/model.onnx"))[-1]
    return max(round(256 / float(np.median(time_calls(run, batch))), 1) for run in onnx_runners(model).values())


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server and case, the median of each figure over the rounds (and the rounds' calls/s)."""
    out: dict[str, Any] = {}
    for name in rounds[0]:
        out[name] = {}
        for case in rounds[0][name]:
            values = [one[name][case] for one in rounds]
            out[name][case] = {key: round(statistics.median(value[key] for value in values), 2)
                               for key in values[0] if key != "load_after"}
    return out


def main() -> dict[str, Any]:
    home = Path(os.environ.get("BENCH_GRPC_HOME", BENCH_HOME))
    with np.load(bench_mnist()[0]) as mnist:
        digits, labels = mnist["x_test"][:256], mnist["y_test"][:256]
    bodies = {}
    for size in (1, 256):
        bodies[size] = TMP / f"grpc-batch{size}.bin"
        bodies[size].write_bytes(h2load.frame(request(digits[:size]).SerializeToString()))
    http_body = write(TMP / "grpc-http-batch1.json", native_json(test_digits(1)), "application/json")
    launched = servers(home)
    rounds, http, ort, empty = [], [], [], []
    for number in range(ROUNDS):
        order = list(launched) if number % 2 == 0 else list(reversed(launched))  # alternate who goes first
        found: dict[str, Any] = {}
        ort.append(in_process(home))
        for name in order:
            found[name] = run_server(name, *launched[name], bodies, digits, labels)
        http.append(ours_http(home, http_body))
        empty.append(floors(bodies[1], http_body))
        rounds.append(found)
    out = {"seconds": SECONDS, "warmup": WARMUP, "rounds": ROUNDS, "cpus": os.cpu_count(), "load": os.getloadavg(),
           "ours": OURS_ENV, "peers": PEERS, "servers": medians(rounds),
           "calls_per_s_rounds": {name: {case: [one[name][case]["calls_per_s"] for one in rounds]
                                         for case in rounds[0][name]} for name in rounds[0]},
           "http_batch1": {key: {figure: round(statistics.median(one[key][figure] for one in http), 2)
                                 for figure in ("requests_per_second", "p99_ms")} for key in http[0]},
           "in_process_images_per_s": statistics.median(ort), "in_process_rounds": ort,
           "empty_servers": {key: statistics.median(one[key] for one in empty) for key in empty[0]}}
    write_part("grpc", out)
    return out


def targets(figures: dict[str, Any]) -> list[list[Any]]:
    """issue 25's targets: rows of [what, ours, against, ratio, target, met]."""
    servers, rows = figures["servers"], []
    for case, _, _ in CASES:
        ours = servers["ours"][case]
        best = max((name for name in servers if name != "ours"), key=lambda name: servers[name][case]["calls_per_s"])
        peer = servers[best][case]
        ratio = ours["calls_per_s"] / peer["calls_per_s"]
        tail = f"p99 {ours['p99_ms']} vs {peer['p99_ms']} ms"
        met = ratio >= 1.1 and ours["p99_ms"] <= peer["p99_ms"]
        rows.append([f"{case} calls/s vs best peer ({best})", ours["calls_per_s"], peer["calls_per_s"],
                     f"{ratio:.2f}x; {tail}", ">= 1.1x, p99 no higher", "met" if met else "not met"])
    for case, connections in (("A c1", "c1"), ("A c16", "c16")):
        http = round(figures["http_batch1"][connections]["requests_per_second"], 2)
        ratio = servers["ours"][case]["calls_per_s"] / http
        rows.append([f"{case} gRPC vs our HTTP batch 1 {connections}", servers["ours"][case]["calls_per_s"], http,
                     f"{ratio:.2f}x", ">= 1.3x", "met" if ratio >= 1.3 else "not met"])
    floor = figures["in_process_images_per_s"]
    for case in ("C c1", "C c4"):
        images = servers["ours"][case]["calls_per_s"] * 256
        rows.append([f"{case} images/s vs in-process ONNX Runtime", round(images, 1), round(floor, 1),
                     f"{images / floor:.0%}", ">= 95%", "met" if images >= 0.95 * floor else "not met"])
    return rows


def section(figures: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's gRPC section: every server's cases, then the targets."""
    servers = figures["servers"]
    rows = [[case, name, servers[name][case]["calls_per_s"], round(servers[name][case]["calls_per_s"] * size, 1),
             servers[name][case]["p50_ms"], servers[name][case]["p99_ms"], servers[name][case]["client_cpu_share"],
             ", ".join(str(value) for value in figures["calls_per_s_rounds"][name][case])]
            for case, size, _ in CASES for name in servers]
    empty, http = figures["empty_servers"], figures["http_batch1"]
    floor_rows = []
    for case, n in (("A c1", 1), ("A c16", 16)):
        grpc_empty, http_empty = round(empty[f"grpc c{n}"], 1), round(empty[f"http c{n}"], 1)
        grpc_ours, http_ours = servers["ours"][case]["calls_per_s"], round(http[f"c{n}"]["requests_per_second"], 2)
        floor_rows.append([f"c{n}", grpc_empty, http_empty, f"{grpc_empty / http_empty:.2f}", grpc_ours, http_ours,
                           f"{grpc_ours / http_ours:.2f}"])
    load = ", ".join(f"{value:.1f}" for value in figures["load"])
    return render("grpc", measured=measured(figures), seconds=figures["seconds"], warmup=figures["warmup"],
                  rounds=figures["rounds"], cpus=figures["cpus"], load=load,
                  ours=", ".join(f"{key}={value}" for key, value in figures["ours"].items()),
                  peers="; ".join(f"{name}: {what}" for name, what in figures["peers"].items()),
                  table=table(["case", "server", "calls/s", "images/s", "p50 ms", "p99 ms", "client CPU share",
                               "calls/s each round"], rows),
                  targets=table(["target", "ours", "against", "ratio", "target", "met?"], targets(figures)),
                  floors=table(["connections", "grpc.aio empty, calls/s", "gunicorn gevent empty, req/s",
                                "gRPC / HTTP, empty", "ours gRPC batch 1", "ours HTTP batch 1", "gRPC / HTTP, ours"],
                               floor_rows))


if __name__ == "__main__":
    print(json.dumps(main()))
