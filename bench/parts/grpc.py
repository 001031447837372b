"""gRPC under load: our GRPCInferenceService against KServe's gRPC server, same model, same messages.

    python -m bench.run --only grpc     # part of `make bench-peers`; the model `make bench` trained
    BENCH_GRPC_HOME=<a MNIST_HOME holding mnist/N/model.onnx> python -m bench.parts.grpc

Cases (raw_input_contents, UINT8, what tritonclient sends by default):
    A  batch 1    at 1 and 16 concurrent streams
    C  batch 256  at 1 and 4 concurrent streams
The load generator is grpc.aio in this process: each stream its own channel, one call after another,
for BENCH_SECONDS after BENCH_WARMUP. It shares the machine's cores with the server, and its own
CPU share is reported beside each case (a client near 100 % of a core is the limit, not the server).
KServe 0.21 runs from this venv (bench/peers/kserve_server.py with PEER_GRPC_PORT, 2 workers);
PyTriton is not run here (its venv and Triton binary are not installed by this module).
Writes the part bench/results/tmp/grpc.json (not yet rendered into bench/results.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil

from bench.common import BENCH_HOME, ROOT, TMP, bench_mnist, write_part
from bench.lib.processes import free_port
from server.protocols import v2_grpc_messages as pb

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "1"))
CASES = (("A c1", 1, 1), ("A c16", 1, 16), ("C c1", 256, 1), ("C c4", 256, 4))
READY_TIMEOUT = 120


def request(images: np.ndarray) -> Any:
    message = pb.ModelInferRequest(model_name="mnist")
    message.inputs.add(name="pixels", datatype="UINT8", shape=list(images.shape))
    message.raw_input_contents.append(np.ascontiguousarray(images, np.uint8).tobytes())
    return message


async def _stream(address: str, body: bytes, until: float, warm_until: float, latencies: list[float]) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer", request_serializer=None, response_deserializer=None)
        count = 0
        while (now := time.perf_counter()) < until:
            await call(body, timeout=30)  # bytes in, bytes out: the client does not parse what it times
            if now >= warm_until:
                latencies.append(time.perf_counter() - now)
                count += 1
        return count


async def _load(address: str, body: bytes, streams: int) -> dict[str, Any]:
    latencies: list[float] = []
    start = time.perf_counter()
    warm_until, until = start + WARMUP, start + WARMUP + SECONDS
    me = psutil.Process()
    cpu_before = me.cpu_times()
    counts = await asyncio.gather(*(_stream(address, body, until, warm_until, latencies) for _ in range(streams)))
    cpu = me.cpu_times()
    elapsed = time.perf_counter() - warm_until
    ordered = sorted(latencies)
    return {"calls_per_s": round(sum(counts) / elapsed, 1),
            "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "client_cpu_share": round((cpu.user + cpu.system - cpu_before.user - cpu_before.system)
                                      / (time.perf_counter() - start), 2)}


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
    model = sorted((home / "mnist").glob("*/model.onnx"))[-1]
    return {
        "ours": ([sys.executable, "-m", "server.transports.grpc_server"],
                 {"MNIST_HOME": str(home), "INFERENCE_THREADS": "1", "GRPC_THREADS": "8", "BIND_HOST": "127.0.0.1"}),
        "kserve": ([sys.executable, str(ROOT / "bench" / "peers" / "kserve_server.py")],
                   {"PEER_MODEL": str(model), "PEER_WORKERS": "2", "PEER_PORT": str(free_port())}),
    }


def check_answer(address: str, images: np.ndarray) -> None:
    """Both servers must answer the same digits before anything is timed."""
    with grpc.insecure_channel(address) as channel:
        infer = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        answer = infer(request(images), timeout=30)
    names = [output.name for output in answer.outputs]
    at = names.index("probabilities")
    raw = answer.raw_output_contents
    values = np.frombuffer(raw[at], "<f4") if raw else np.array(answer.outputs[at].contents.fp32_contents, np.float32)
    assert values.size == len(images) * 10, (names, values.size)


def main() -> dict[str, Any]:
    home = Path(os.environ.get("BENCH_GRPC_HOME", BENCH_HOME))
    with np.load(bench_mnist()[0]) as mnist:
        digits = mnist["x_test"][:256]
    bodies = {1: request(digits[:1]).SerializeToString(), 256: request(digits).SerializeToString()}
    results: dict[str, Any] = {}
    for name, (argv, env) in servers(home).items():
        port = free_port()
        env = {**os.environ, **env, "GRPC_PORT": str(port), "PEER_GRPC_PORT": str(port),
               "GRPC_METRICS_PORT": str(free_port())}
        log = open(TMP / f"grpc-{name}.log", "wb")  # noqa: SIM115 - closed below
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        address = f"127.0.0.1:{port}"
        try:
            wait_ready(address, process)
            check_answer(address, digits[:1])
            check_answer(address, digits)
            results[name] = {}
            for case, size, streams in CASES:
                results[name][case] = asyncio.run(_load(address, bodies[size], streams))
                print(f"{name:7} {case:6} {results[name][case]}", flush=True)
        finally:
            process.terminate()
            process.wait(30)
            log.close()
    out = {"seconds": SECONDS, "warmup": WARMUP, "load": os.getloadavg(), "cpus": os.cpu_count(), "servers": results}
    write_part("grpc", out)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
