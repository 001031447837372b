"""The model's own floor on this machine: what no server can beat for batch-256 requests.

Two measurements, both with 1 intra-op thread and batches in slices of RUN_SLICE images:
- per-node profile (ONNX Runtime's profiler) of the published graph, run slice by slice from Python:
  the same kernels the server's Scan runs, under the names the profiler gives the plain graph's nodes.
  Where a batch's time goes, and the arithmetic rate of the convolutions and matrix products, to
  compare with the cores' peak;
- model-only ceiling of the server's own model code (`server.backends.OnnxModel`): 1 process alone,
  then WEB_CONCURRENCY processes at once, each running batches of 256 test digits back to back for
  BENCH_FLOOR_SECONDS, BENCH_ROUNDS rounds (medians).
  A server answering batch-256 requests with that many workers cannot exceed it; the report
  sets each server's case C figures against it. The same for one image per call: what a server
  that runs each batch-1 request on its own (case A) cannot exceed; one that batches concurrent
  requests can;
- the stack's own floor for case A (batch-1 v2 JSON, wrk at 1 and 16 connections, both servers up at once,
  rounds rotating their order): our server as compose runs it with its model call answered at once
  (`free_model_app`: everything else, from the socket to the codecs, as served), and gunicorn with the same
  settings serving an app that answers at once (bench/empty_servers.py). Case A with the model cannot exceed
  the first; the peers' A figures are set against it.

    python -m bench.parts.floor   # writes bench/results/tmp/floor.json; optional part `floor` of bench.run
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, TMP, load_average, write_part
from bench.lib import bodies, sidebyside
from bench.lib.bodies import test_digits
from bench.lib.ours import COMPOSE_SERVER_ENV, V2_INFER, launch, published
from bench.lib.processes import Running, free_port
from bench.lib.wrk import wrk
from bench.report import Parts, fragment, measured, render, table
from server.backends import RUN_SLICE, OnnxModel

BATCH = 256
PROFILED_BATCHES = 20
SECONDS = float(os.environ.get("BENCH_FLOOR_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WORKERS = int(COMPOSE_SERVER_ENV["WEB_CONCURRENCY"])
START_DELAY_SECONDS = 3.0  # children load their session, then start together at one wall-clock instant
FREE_MODEL, EMPTY_APP = "ours, model call answered at once", "gunicorn, an app that answers at once"
STACK_APPS = {FREE_MODEL: "bench.parts.floor:free_model_app()", EMPTY_APP: "bench.empty_servers:app"}
STACK_CONNECTIONS = (1, 16)


def batch() -> np.ndarray:
    """256 test digits as the model takes them, (N, 28, 28, 1) float32 in 0..1."""
    images = test_digits(BATCH)
    return (images.astype(np.float32) / 255.0).reshape(BATCH, 28, 28, 1)


def node_flops(args: dict[str, Any]) -> int:
    """Multiply-adds x 2 of one Conv or Gemm call, from the shapes ONNX Runtime's profiler records."""
    inputs = [next(iter(shape.values())) for shape in args.get("input_type_shape", [])]
    outputs = [next(iter(shape.values())) for shape in args.get("output_type_shape", [])]
    if args["op_name"] == "Conv" and len(inputs) >= 2 and outputs:
        _filters, per_group, *kernel = inputs[1]
        return 2 * math.prod(outputs[0]) * per_group * math.prod(kernel)
    if args["op_name"] in ("Gemm", "FusedGemm", "MatMul") and inputs and outputs:
        return 2 * math.prod(inputs[0]) * outputs[0][-1]
    return 0


def profile(images: np.ndarray) -> list[dict[str, Any]]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = onnxruntime.InferenceSession(str(published()), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        for _ in range(PROFILED_BATCHES):
            for start in range(0, BATCH, RUN_SLICE):
                session.run(None, {name: images[start: start + RUN_SLICE]})
        events = json.loads(Path(session.end_profiling()).read_text())
    micros: dict[tuple[str, str], float] = defaultdict(float)
    flops: dict[tuple[str, str], int] = defaultdict(int)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            key = (event["args"]["op_name"], event["name"].removesuffix("_kernel_time"))
            micros[key] += event["dur"]
            flops[key] += node_flops(event["args"])
    total = sum(micros.values())
    nodes = [{"op": op, "node": node, "ms_per_batch": round(spent / PROFILED_BATCHES / 1000, 3),
              "share": round(spent / total, 4),
              "gflop_per_second": round(flops[(op, node)] / spent / 1000, 1) if flops[(op, node)] else None}
             for (op, node), spent in sorted(micros.items(), key=lambda item: -item[1])]
    return nodes


def child(start_at: float, seconds: float, size: int = BATCH) -> None:
    """One model process: batches of `size` back to back from `start_at` for `seconds`; prints images/s."""
    model = OnnxModel(published(), threads=1)
    images = batch()[:size]
    model.predict(images)  # warm the arena before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(images)
        done += size
    print(json.dumps({"images_per_second": done / (time.perf_counter() - started)}))


def concurrent_rate(processes: int, size: int = BATCH) -> float:
    """Images/s of `processes` model processes running batches of `size` at once (their sum)."""
    start_at = time.time() + START_DELAY_SECONDS
    command = [sys.executable, "-m", "bench.parts.floor", "--child", str(start_at), str(SECONDS), str(size)]
    children = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    rates = []
    for process in children:
        out, _ = process.communicate(timeout=START_DELAY_SECONDS + SECONDS + 120)
        if process.returncode != 0:
            raise SystemExit(f"bench: a model process failed with exit code {process.returncode}")
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_second"])
    return sum(rates)


def free_model_app() -> Any:
    """Our app whose model call returns at once (`bench.parts.floor:free_model_app()` for gunicorn): the model
    still loads (readiness, warm-up), and requests are read, checked, decoded, encoded, logged and counted."""
    from server import dataplane
    from server.app import create_app

    answer = np.full((1, 10), 0.01, np.float32)
    answer[0, 0] = 0.91  # rows of probabilities, as the model's: the data plane checks only that they are finite
    dataplane.DataPlane._run = lambda _plane, _model, pixels: np.repeat(answer, len(pixels), axis=0)
    return create_app()


def stack_floor() -> dict[str, Any]:
    """Case A through our server with a free model call, and through an empty app on the same gunicorn."""
    body = bodies.write(TMP / "bodies" / "floor-v2-1.json", bodies.v2_json(test_digits(1)), "application/json")
    servers: dict[str, Running] = {}
    cases: dict[str, Any] = {}
    try:
        for name, app in STACK_APPS.items():
            port = free_port()
            servers[name] = Running(launch(name, port, app=app, log_name=f"floor-{port}", LOG_FORMAT="json"), port)
        for running in servers.values():
            wrk(running.url + V2_INFER, body, 16, 2)  # warm-up
        for connections in STACK_CONNECTIONS:
            runs, loads = sidebyside.rounds(servers, V2_INFER, body, connections, int(SECONDS), ROUNDS)
            cases[f"A c{connections}"] = {"variants": sidebyside.summary(runs), "load_average": loads}
    finally:
        for running in servers.values():
            running.stop()
    return cases


def main() -> dict[str, Any]:
    images = batch()
    nodes = profile(images)
    setups = [(size, processes) for size in (BATCH, 1) for processes in (1, WORKERS)]
    rounds: dict[tuple[int, int], list[float]] = {setup: [] for setup in setups}
    for number in range(ROUNDS):
        for size, processes in setups if number % 2 == 0 else setups[::-1]:
            rounds[size, processes].append(concurrent_rate(processes, size))
            print(f"bench: floor round {number + 1}: batch {size}, {processes} process(es)"
                  f" {rounds[size, processes][-1]:.0f} images/s", flush=True)
    result = {
        "run_slice": RUN_SLICE,
        "batch": BATCH,
        "seconds_per_run": SECONDS,
        "rounds": ROUNDS,
        "nodes": nodes,
        "ceiling": ceiling(rounds, BATCH),
        "ceiling_batch_1": ceiling(rounds, 1),
        "stack": stack_floor(),
        "load_average": load_average(),
    }
    write_part("floor", result)
    return result


def ceiling(rounds: dict[tuple[int, int], list[float]], size: int) -> dict[str, Any]:
    """Per number of processes: the median images/s over rounds of batches of `size`, and each round's."""
    return {str(processes): {"images_per_second": round(float(np.median(rates)), 1),
                             "runs": [round(rate, 1) for rate in rates]}
            for (batch_size, processes), rates in rounds.items() if batch_size == size}


def section(floor: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: the model's own limit for batch-256 and batch-1 calls, and every case of
    each server (the peers part) set against it."""
    ceiling = floor["ceiling"]
    processes = max(ceiling, key=int)
    single = floor.get("ceiling_batch_1")
    nodes = [[node["op"], node["node"], node["ms_per_batch"], f"{node['share']:.1%}", node["gflop_per_second"] or ""]
             for node in floor["nodes"] if node["share"] >= 0.005]
    peers = parts.get("peers")
    return render("floor", measured=measured(floor), run_slice=floor["run_slice"], batch=floor["batch"],
                  nodes=table(["op", "node", f"ms per {floor['batch']} images", "share", "GFLOP/s"], nodes),
                  seconds=floor["seconds_per_run"], rounds=floor["rounds"], processes=processes,
                  one=ceiling["1"]["images_per_second"], one_runs=ceiling["1"]["runs"],
                  many=ceiling[processes]["images_per_second"], many_runs=ceiling[processes]["runs"],
                  single=fragment("floor-single", processes=processes, one=single["1"]["images_per_second"],
                                  one_runs=single["1"]["runs"], many=single[processes]["images_per_second"],
                                  many_runs=single[processes]["runs"]) if single else "",
                  peers=fragment("floor-peers", measured=measured(peers), processes=processes,
                                 table=table(["server", *SHARE_CASES], share_rows(floor, processes, peers)))
                  if peers else "",
                  stack=fragment("floor-stack", seconds=floor["seconds_per_run"], rounds=floor["rounds"],
                                 table=table(["case", "ours, model call free: req/s", "empty app: req/s",
                                              "ours with the model (peers run)", "best peer (peers run)",
                                              "1.1x the best peer"], stack_rows(floor["stack"], peers)))
                  if floor.get("stack") else "")


def stack_rows(stack: dict[str, Any], peers: dict[str, Any] | None) -> list[list[Any]]:
    """Per case: the two floors, and where the peers run put ours and the best peer."""
    rows = []
    for case, value in stack.items():
        figures = value["variants"]
        ours = best = target = ""
        if peers:
            servers = peers["servers"]
            ours = servers["ours"]["cases"][case]["requests_per_second"]
            name, top = max(((name, entry["cases"][case]) for name, entry in servers.items() if name != "ours"),
                            key=lambda item: item[1]["requests_per_second"])
            best, target = f"{name} {top['requests_per_second']}", round(1.1 * top["requests_per_second"], 1)
        rows.append([case, figures[FREE_MODEL]["requests_per_second"], figures[EMPTY_APP]["requests_per_second"],
                     ours, best, target])
    return rows


# The peers' cases against the ceiling of their batch size: c1 against one process, more connections against
# WEB_CONCURRENCY processes (a server with that many workers); A is batch 1, B and C batch 256.
SHARE_CASES = ("A c1", "A c16", "B c1", "B c4", "C c1", "C c4")


def share_rows(floor: dict[str, Any], processes: str, peers: dict[str, Any]) -> list[list[Any]]:
    """Every server's cases as a share of the model-only ceiling (ours' C as .npy on a row of its own)."""
    def share(figures: dict[str, Any] | None, case: str) -> str:
        limits = floor.get("ceiling_batch_1") if case.startswith("A") else floor["ceiling"]
        if not figures or not limits:
            return ""
        limit = limits["1" if case.endswith("c1") else processes]["images_per_second"]
        return f"{figures['images_per_second'] / limit:.0%}"

    rows = []
    for name, entry in peers["servers"].items():
        rows.append([name, *(share(entry["cases"].get(case), case) for case in SHARE_CASES)])
        if any(f"{case} .npy" in entry["cases"] for case in SHARE_CASES):
            rows.append([f"{name}, C as .npy", *(share(entry["cases"].get(f"{case} .npy"), case)
                                                 for case in SHARE_CASES)])
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
    else:
        print(json.dumps(main()))
