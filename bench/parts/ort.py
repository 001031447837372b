"""ONNX Runtime session settings: the memory arena's speed without its memory?

Each variant runs in a fresh process (memory figures must not mix): one 1-thread session over
the benchmark's model.onnx, warmed up, then the median latency of batch 1, 32 and 256 in one
thread, then a mix of batch sizes up to MAX_BATCH_SIZE (what a server sees), then that
process's RSS and PSS.

    python -m bench.parts.ort [MODEL_ONNX]   # writes bench/results/tmp/ort.json; optional part `ort` of bench.run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, load_average, median, write_part
from bench.lib.ours import published
from bench.report import Parts, measured, render, table

TIMED_SIZES = (1, 32, 256)
MIX = (1, 32, 256, 1024, 7, 100, 512, 3, 1000, 64, 300, 17)  # one server-like sequence, up to MAX_BATCH_SIZE
MIX_ROUNDS = 3
SECONDS_PER_SIZE = float(os.environ.get("BENCH_ORT_SECONDS", "2"))
MIN_CALLS = 5
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
VARIANTS = {
    "arena_off": "enable_cpu_mem_arena = False (the server before this change)",
    "arena_off_no_pattern": "arena off and enable_mem_pattern = False",
    "arena_default": "arena on, ONNX Runtime's defaults (extend by the next power of two)",
    "arena_same_as_requested": "arena on via a shared OrtArenaCfg, arena_extend_strategy kSameAsRequested",
    "arena_shrink": "arena on, each run shrinks it afterwards (run option memory.enable_memory_arena_shrinkage)",
    "arena_bucketed": "arena on (kSameAsRequested) and batches padded up to a power of two (fewer distinct shapes)",
    "arena_chunk8": "arena on (defaults); batches run in slices of at most 8 images",
    "arena_chunk16": "arena on (defaults); batches run in slices of at most 16 images",
    "arena_chunk32": "arena on (defaults); batches run in slices of at most 32 images",
    "arena_chunk64": "arena on (defaults); batches run in slices of at most 64 images",
    "arena_chunk128": "arena on (defaults); batches run in slices of at most 128 images",
    "arena_off_chunk64": "arena off; batches run in slices of at most 64 images",
    "malloc_tuned": "arena off, glibc malloc keeps freed blocks instead of mmap/munmap per call"
                    " (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ = 64 MiB)",
}
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(64 << 20)}


def session(path: Path, variant: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if variant.startswith(("arena_off", "malloc")):
        options.enable_cpu_mem_arena = False
    if variant == "arena_off_no_pattern":
        options.enable_mem_pattern = False
    if variant in ("arena_same_as_requested", "arena_bucketed"):
        config = ort.OrtArenaCfg({"arena_extend_strategy": 1})  # 1 = kSameAsRequested
        ort.create_and_register_allocator(ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                                            ort.OrtMemType.DEFAULT), config)
        options.add_session_config_entry("session.use_env_allocators", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runner(path: Path, variant: str) -> Any:
    import onnxruntime as ort

    sess = session(path, variant)
    name = sess.get_inputs()[0].name
    run_options = None
    if variant == "arena_shrink":
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    chunk = int(variant.rsplit("chunk", 1)[1]) if "chunk" in variant else 0

    def run(batch: np.ndarray) -> np.ndarray:
        if chunk and len(batch) > chunk:
            return np.concatenate([sess.run(None, {name: batch[start: start + chunk]}, run_options)[0]
                                   for start in range(0, len(batch), chunk)])
        if variant == "arena_bucketed":
            count = len(batch)
            bucket = 1 << (count - 1).bit_length()
            if bucket != count:
                batch = np.concatenate([batch, np.zeros((bucket - count, *batch.shape[1:]), batch.dtype)])
            return sess.run(None, {name: batch}, run_options)[0][:count]
        return sess.run(None, {name: batch}, run_options)[0]

    return run


def memory_mib() -> dict[str, float]:
    import psutil

    info = psutil.Process().memory_full_info()
    return {"rss_mib": round(info.rss / 2**20, 1), "pss_mib": round(info.pss / 2**20, 1)}


def child(path: Path, variant: str) -> dict[str, Any]:
    """One variant in this process: latencies, then memory after the mix."""
    x = np.random.default_rng(0).random((max(MIX), 28, 28, 1), dtype=np.float32)
    started = time.perf_counter()
    run = runner(path, variant)
    reference = run(x[:256])
    result: dict[str, Any] = {"load_seconds": round(time.perf_counter() - started, 3),
                              "memory_after_load": memory_mib(), "latency_ms": {}, "cpu_ms": {}}
    for size in TIMED_SIZES:
        run(x[:size])  # first call of a shape: allocation and kernel choice
        seconds: list[float] = []
        cpu_seconds: list[float] = []
        deadline = time.perf_counter() + SECONDS_PER_SIZE
        while len(seconds) < MIN_CALLS or time.perf_counter() < deadline:
            begin, begin_cpu = time.perf_counter(), time.thread_time()
            run(x[:size])
            seconds.append(time.perf_counter() - begin)
            cpu_seconds.append(time.thread_time() - begin_cpu)
        result["latency_ms"][str(size)] = round(median(seconds) * 1000, 3)
        # This thread's CPU time (user + system, so page faults count): less disturbed by other jobs than wall time.
        result["cpu_ms"][str(size)] = round(median(cpu_seconds) * 1000, 3)
    for _ in range(MIX_ROUNDS):
        for size in MIX:
            run(x[:size])
    result["memory_after_mix"] = memory_mib()
    result["max_difference"] = float(np.abs(run(x[:256]) - reference).max())
    return result


def model_path() -> Path:
    return Path(sys.argv[1]) if len(sys.argv) > 1 else published()


def pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds of one variant."""
    first = runs[0]
    return {key: {size: round(median([run[key][size] for run in runs]), 3) for size in first[key]}
            if key in ("latency_ms", "cpu_ms") else
            {name: round(median([run[key][name] for run in runs]), 1) for name in first[key]}
            if key.startswith("memory") else max(run[key] for run in runs) for key in first}


def main() -> dict[str, Any]:
    path = model_path()
    runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for round_number in range(ROUNDS):
        order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))  # a busy spell hits all
        for variant in order:
            env = {**os.environ, **(MALLOC_ENV if variant == "malloc_tuned" else {})}
            output = subprocess.run([sys.executable, "-m", "bench.parts.ort", "--child", variant, str(path)],
                                    capture_output=True, text=True, env=env, check=True).stdout
            entry = json.loads(output.strip().splitlines()[-1])
            runs[variant].append(entry)
            print(f"bench: round {round_number + 1} {variant:24s} "
                  + " ".join(f"b{size} {ms:7.3f} ms (CPU {entry['cpu_ms'][size]:7.3f})"
                             for size, ms in entry["latency_ms"].items())
                  + f"  after mix RSS {entry['memory_after_mix']['rss_mib']} MiB"
                  f" PSS {entry['memory_after_mix']['pss_mib']} MiB", flush=True)
    variants = {variant: {"what": what, **pooled(runs[variant])} for variant, what in VARIANTS.items()}
    result = {"model": str(path.relative_to(ROOT)), "seconds_per_size": SECONDS_PER_SIZE, "rounds": ROUNDS,
              "mix": list(MIX), "mix_rounds": MIX_ROUNDS, "variants": variants, "load_after": load_average()}
    write_part("ort", result)
    return result


def section(ort: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: CPU and wall time per variant and batch, and memory after a mix of batches."""
    from server.backends import RUN_SLICE

    rows = [[name, entry["what"], *(f"{entry['cpu_ms'][size]} / {entry['latency_ms'][size]}" for size in ("1", "32",
                                                                                                          "256")),
             entry["memory_after_mix"]["rss_mib"], entry["memory_after_mix"]["pss_mib"]]
            for name, entry in ort["variants"].items()]
    return render("ort", measured=measured(ort), rounds=ort.get("rounds", 1), mix_rounds=ort["mix_rounds"],
                  mix=", ".join(map(str, ort["mix"])), run_slice=RUN_SLICE,
                  table=table(["variant", "what", "batch 1 CPU / wall ms", "batch 32", "batch 256", "RSS MiB after mix",
                               "PSS MiB after mix"], rows))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        print(json.dumps(child(Path(sys.argv[3]), sys.argv[2])))
    else:
        print(json.dumps(main()))
