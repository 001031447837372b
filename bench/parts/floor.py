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
  sets each server's case C figures against it.

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

from bench.common import ROOT, load_average, write_part
from bench.lib.bodies import test_digits
from bench.lib.ours import COMPOSE_SERVER_ENV, published
from bench.report import Parts, fragment, measured, render, table
from server.backends import RUN_SLICE, OnnxModel

BATCH = 256
PROFILED_BATCHES = 20
SECONDS = float(os.environ.get("BENCH_FLOOR_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WORKERS = int(COMPOSE_SERVER_ENV["WEB_CONCURRENCY"])
START_DELAY_SECONDS = 3.0  # children load their session, then start together at one wall-clock instant


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


def child(start_at: float, seconds: float) -> None:
    """One model process: batches back to back from `start_at` for `seconds`; prints images/s."""
    model = OnnxModel(published(), threads=1)
    images = batch()
    model.predict(images)  # warm the arena before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(images)
        done += BATCH
    print(json.dumps({"images_per_second": done / (time.perf_counter() - started)}))


def concurrent_rate(processes: int) -> float:
    """Images/s of `processes` model processes running at once (their sum)."""
    start_at = time.time() + START_DELAY_SECONDS
    children = [subprocess.Popen([sys.executable, "-m", "bench.parts.floor", "--child", str(start_at), str(SECONDS)],
                                 cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    rates = []
    for process in children:
        out, _ = process.communicate(timeout=START_DELAY_SECONDS + SECONDS + 120)
        if process.returncode != 0:
            raise SystemExit(f"bench: a model process failed with exit code {process.returncode}")
        rates.append(json.loads(out.strip().splitlines()[-1])["images_per_second"])
    return sum(rates)


def main() -> dict[str, Any]:
    images = batch()
    nodes = profile(images)
    rounds: dict[int, list[float]] = {1: [], WORKERS: []}
    for number in range(ROUNDS):
        for processes in (1, WORKERS) if number % 2 == 0 else (WORKERS, 1):
            rounds[processes].append(concurrent_rate(processes))
            print(f"bench: floor round {number + 1}: {processes} process(es) {rounds[processes][-1]:.0f} images/s",
                  flush=True)
    result = {
        "run_slice": RUN_SLICE,
        "batch": BATCH,
        "seconds_per_run": SECONDS,
        "rounds": ROUNDS,
        "nodes": nodes,
        "ceiling": {str(processes): {"images_per_second": round(float(np.median(rates)), 1),
                                     "runs": [round(rate, 1) for rate in rates]}
                    for processes, rates in rounds.items()},
        "load_average": load_average(),
    }
    write_part("floor", result)
    return result


def section(floor: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: the model's own limit for batch-256 requests, and case C of each server
    (the peers part) set against it."""
    ceiling = floor["ceiling"]
    processes = max(ceiling, key=int)
    nodes = [[node["op"], node["node"], node["ms_per_batch"], f"{node['share']:.1%}", node["gflop_per_second"] or ""]
             for node in floor["nodes"] if node["share"] >= 0.005]
    peers = parts.get("peers")
    return render("floor", measured=measured(floor), run_slice=floor["run_slice"], batch=floor["batch"],
                  nodes=table(["op", "node", f"ms per {floor['batch']} images", "share", "GFLOP/s"], nodes),
                  seconds=floor["seconds_per_run"], rounds=floor["rounds"], processes=processes,
                  one=ceiling["1"]["images_per_second"], one_runs=ceiling["1"]["runs"],
                  many=ceiling[processes]["images_per_second"], many_runs=ceiling[processes]["runs"],
                  peers=fragment("floor-peers", measured=measured(peers), processes=processes,
                                 table=table(["case", "server", "images/s", "of the model-only ceiling"],
                                             case_c_rows(ceiling, processes, peers))) if peers else "")


def case_c_rows(ceiling: dict[str, Any], processes: str, peers: dict[str, Any]) -> list[list[Any]]:
    """Case C (c1 against one process, c4 against `processes`) of every server, as a share of the ceiling."""
    return [[label, name, figures["images_per_second"],
             f"{figures['images_per_second'] / limit['images_per_second']:.0%}"]
            for case, limit in (("C c1", ceiling["1"]), ("C c4", ceiling[processes]))
            for name, entry in peers["servers"].items()
            for label, figures in entry["cases"].items() if label.split(" .")[0] == case]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(float(sys.argv[2]), float(sys.argv[3]))
    else:
        print(json.dumps(main()))
