"""Ours against the serving frameworks a user would pick instead, on the same model and bodies.

Each peer runs from its own virtual environment (bench/results/tmp/peers/<peer>, created here from
bench/peers/requirements-<peer>.txt, pinned) with its server script in bench/peers/: the
trainer's model.onnx in ONNX Runtime with 1 intra-op thread, 2 worker processes or model
instances where the peer has them. Every server gets the same bodies:

    A  batch 1,   v2 JSON (UINT8)            1 and 16 connections
    B  batch 256, v2 JSON (UINT8)            1 and 4 connections
    C  batch 256, binary: the v2 binary tensor extension where the server speaks it, else .npy;
       ours both (v2 binary, and .npy on /predict)   1 and 4 connections

Every answer is checked against in-process ONNX Runtime before anything is timed. Then wrk
(bench/lib/post.lua, one thread) runs each case for BENCH_WARMUP seconds (not counted) and
BENCH_SECONDS seconds; BENCH_ROUNDS rounds alternate the order of the servers, each round
starting every server afresh (start-to-ready is timed from the process start to the first 200
on its readiness route). After the load: RSS of each process, PSS of the process tree, and the
CPU seconds each process spent during the load (psutil).

    python -m bench.parts.peers   # or `make bench-peers`; writes bench/results/tmp/peers.json
    BENCH_PEERS=ours,kserve BENCH_SECONDS=2 BENCH_ROUNDS=1 python -m bench.parts.peers   # a quick check
    BENCH_PEERS=ours,kserve BENCH_CASES="A c16" python -m bench.parts.peers   # some cases: printed, not saved
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_HOME, ROOT, TMP, bench_mnist, load_average, median, write_part
from bench.lib.bodies import case_bodies
from bench.lib.ours import COMPOSE_SERVER_ENV, V2_INFER, published, server_layout
from bench.lib.processes import Launch, Running, cpu_seconds, free_port, memory
from bench.lib.wrk import Body, figures, wrk
from bench.report import Parts, fragment, measured, render, table

PEERS_DIR = ROOT / "bench" / "peers"
VENVS = TMP / "peers"
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
# A comma-separated subset of the cases; the result is then only printed, so a partial run never
# replaces the part results.md is made from.
CASE_SUBSET = [case for case in os.environ.get("BENCH_CASES", "").split(",") if case]
# (case, images per request, body kind, connections)
CASES = (("A c1", 1, "json", 1), ("A c16", 1, "json", 16), ("B c1", 256, "json", 1), ("B c4", 256, "json", 4),
         ("C c1", 256, "binary", 1), ("C c4", 256, "binary", 4))
V2_READY = "/v2/models/mnist/ready"
# Mosec's dynamic batching: requests per call (8: all that one of the 2 workers can have waiting when 16
# connections send batch-1 requests) and the most it waits for them (its smallest, 1 ms: Mosec's docs ask for
# a wait below the batch's inference time, and a batch of 8 takes about that).
MOSEC_BATCH = 8
MOSEC_WAIT_MS = 1


@dataclass
class Spec:
    """How to start one server and talk to it."""

    name: str
    what: str
    command: list[str]
    ready_path: str
    infer_path: str = V2_INFER
    binary: str = "v2"  # the C body: "v2" (binary tensor extension), "npy" (raw body) or "multipart" (.npy file)
    binary_path: str = V2_INFER
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    ready_contains: str = ""  # when the readiness route answers 200 before the model is deployed
    # Ready when a batch-1 v2 JSON body POSTed to infer_path is answered: for a server with no route
    # that waits for the model (Mosec); ready_path is then unused.
    ready_post: bool = False
    extra_cases: tuple[tuple[str, int, str, int], ...] = ()  # ours: C as .npy on /predict too
    venv: str = ""  # bench/peers/requirements-<venv>.txt; default the name (two configurations may share one)

    @property
    def cases(self) -> tuple[tuple[str, int, str, int], ...]:
        return CASES + self.extra_cases

    @property
    def requirements(self) -> str:
        return self.venv or self.name

    def launch(self, ready_body: Body | None = None) -> Launch:
        if self.ready_post:
            return Launch(self.name, self.command, self.infer_path, self.env, self.cwd, ready_body=ready_body,
                          log_name=f"peer-{self.name}")
        return Launch(self.name, self.command, self.ready_path, self.env, self.cwd, self.ready_contains,
                      log_name=f"peer-{self.name}")


def peer_python(peer: str) -> str:
    return str(VENVS / peer / "bin" / "python")


def ensure_venv(peer: str) -> None:
    """bench/results/tmp/peers/<peer> with bench/peers/requirements-<peer>.txt installed (again when it changed)."""
    requirements = PEERS_DIR / f"requirements-{peer}.txt"
    stamp = VENVS / peer / ".installed"
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest:
        return
    print(f"bench: installing {peer} into {VENVS / peer} (pinned in {requirements.relative_to(ROOT)})", flush=True)
    # The peers' own Python: the interpreter behind ours (a venv made from a venv points at the same base).
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENVS / peer)], check=True)
    subprocess.run([peer_python(peer), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([peer_python(peer), "-m", "pip", "install", "--quiet", "-r", str(requirements)], check=True)
    stamp.write_text(digest)


def specs(model: Path, port: int) -> dict[str, Spec]:
    peer_env = {"PEER_MODEL": str(model), "PEER_PORT": str(port), "PEER_WORKERS": "2"}
    ours_env = {**COMPOSE_SERVER_ENV, "MNIST_HOME": str(BENCH_HOME), "BIND_HOST": "127.0.0.1", "PORT": str(port)}
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.wsgi:app"]
    return {
        "ours": Spec("ours", f"gunicorn, {server_layout()}; C as v2 binary, and as .npy on /predict",
                     gunicorn, "/readyz", env=ours_env,
                     extra_cases=(("C c1 .npy", 256, "npy", 1), ("C c4 .npy", 256, "npy", 4))),
        "kserve": Spec("kserve", "KServe 0.21 ModelServer, custom kserve.Model, 2 uvicorn workers",
                       [peer_python("kserve"), str(PEERS_DIR / "kserve_server.py")], V2_READY, env=peer_env),
        "pytriton": Spec("pytriton", "PyTriton 0.7 (Triton 2.51 HTTP), 2 model instances, dynamic batching",
                         [peer_python("pytriton"), str(PEERS_DIR / "pytriton_server.py")], V2_READY, env=peer_env),
        "bentoml": Spec("bentoml", "BentoML 1.4.40 service, 2 workers; C as a multipart .npy upload",
                        [str(VENVS / "bentoml" / "bin" / "bentoml"), "serve", "bentoml_server:Mnist", "--host",
                         "127.0.0.1", "--port", str(port)], "/readyz", infer_path="/infer", binary="multipart",
                        binary_path="/infer_npy", env=peer_env, cwd=PEERS_DIR),
        "litserve": Spec("litserve", "LitServe 0.2.19, 2 inference workers; C as a multipart .npy upload",
                         [peer_python("litserve"), str(PEERS_DIR / "litserve_server.py")], "/health",
                         infer_path="/predict", binary="multipart", binary_path="/predict", env=peer_env),
        "rayserve": Spec("rayserve", "Ray Serve 2.60, 2 replicas behind Serve's proxy; C as a raw .npy body",
                         [peer_python("rayserve"), str(PEERS_DIR / "rayserve_server.py")], "/-/routes",
                         infer_path="/infer", binary="npy", binary_path="/infer", env=peer_env,
                         ready_contains="/infer"),
        **mosec_specs(peer_env),
        "mlserver": Spec("mlserver", "MLServer 1.7.1, custom MLModel runtime, 2 parallel inference workers; its REST"
                                     " API has no v2 binary extension: C as a raw .npy body on a custom endpoint",
                         [peer_python("mlserver"), str(PEERS_DIR / "mlserver_server.py")], V2_READY,
                         binary="npy", binary_path="/v2/models/mnist/infer_npy", env=peer_env),
    }


def mosec_specs(peer_env: dict[str, str]) -> dict[str, Spec]:
    """Mosec without and with its dynamic batching (bench/peers/mosec_server.py; one venv)."""
    command = [peer_python("mosec"), str(PEERS_DIR / "mosec_server.py")]
    common = {"ready_path": "/inference", "infer_path": "/inference", "binary": "npy", "binary_path": "/inference",
              "ready_post": True, "venv": "mosec"}
    return {
        "mosec": Spec("mosec", "Mosec 0.9.8, 2 workers, no batching; C as a raw .npy body", command,
                      env={**peer_env, "PEER_BATCH": "1"}, **common),
        "mosec-batch": Spec("mosec-batch", f"Mosec 0.9.8, 2 workers, dynamic batching (up to {MOSEC_BATCH} requests,"
                                           f" {MOSEC_WAIT_MS} ms wait); C as a raw .npy body", command,
                            env={**peer_env, "PEER_BATCH": str(MOSEC_BATCH), "PEER_BATCH_WAIT_MS": str(MOSEC_WAIT_MS)},
                            **common),
    }


def case_target(spec: Spec, kind: str, size: int, bodies: dict[str, Body]) -> tuple[str, Body]:
    if kind == "json":
        return spec.infer_path, bodies[f"json-{size}"]
    if kind == "npy":  # ours' native route
        return "/predict", bodies["npy-256"]
    return spec.binary_path, bodies[f"{spec.binary}-256"]


def probabilities(answer: dict[str, Any]) -> np.ndarray:
    """The (N, 10) probabilities of a v2 answer, or of our native `/predict` answer."""
    if "predictions" in answer:
        return np.array([p["probabilities"] for p in answer["predictions"]], dtype=np.float32)
    output = next(o for o in answer["outputs"] if o["name"] == "probabilities")
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


class PeerServer(Running):
    """One server of the comparison, started from its Spec."""

    def __init__(self, spec: Spec, port: int, ready_body: Body | None = None) -> None:
        self.spec = spec
        super().__init__(spec.launch(ready_body), port)


def check(server: PeerServer, bodies: dict[str, Body], expected: np.ndarray) -> None:
    """Every case's body once: the answer must match in-process ONNX Runtime before anything is timed."""
    for case, size, kind, _connections in server.spec.cases:
        path, body = case_target(server.spec, kind, size, bodies)
        got = probabilities(server.post(path, body))
        if got.shape != (size, 10) or not np.allclose(got, expected[:size], atol=1e-4):
            raise RuntimeError(f"{server.spec.name}, case {case}: answer differs from in-process ONNX Runtime"
                               f" (shape {got.shape}, largest difference"
                               f" {np.abs(got - expected[:size]).max() if got.shape == (size, 10) else 'n/a'})")


def one_round(spec: Spec, port: int, bodies: dict[str, Body], expected: np.ndarray) -> dict[str, Any]:
    server = PeerServer(spec, port, bodies["json-1"])
    try:
        check(server, bodies, expected)
        before = cpu_seconds(server.tree())
        cases = {}
        started = time.perf_counter()
        for case, size, kind, connections in spec.cases:
            if CASE_SUBSET and case not in CASE_SUBSET:
                continue
            path, body = case_target(spec, kind, size, bodies)
            if WARMUP:
                wrk(server.url + path, body, connections, WARMUP)
            cases[case] = figures(wrk(server.url + path, body, connections, SECONDS), size)
            print(f"bench: {spec.name:12s} {case:6s} {cases[case]['requests_per_second']:8.1f} req/s"
                  f" {cases[case]['images_per_second']:9.1f} images/s p50 {cases[case]['p50_ms']:7.2f} ms"
                  f" p99 {cases[case]['p99_ms']:7.2f} ms errors {cases[case]['errors']}", flush=True)
        elapsed = time.perf_counter() - started
        processes = server.tree()
        after = cpu_seconds(processes)
        cpu = [{"name": p.name(), "cpu_seconds": round(after[p.pid] - before.get(p.pid, 0.0), 1)}
               for p in processes if p.pid in after]
        return {"start_to_ready_seconds": server.ready_seconds, "cases": cases, **memory(processes),
                "cpu_per_process": cpu, "load_seconds": round(elapsed, 1)}
    finally:
        server.stop()


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds per case (errors summed); memory and CPU from the last round."""
    cases = {}
    for case in rounds[0]["cases"]:
        figures = [r["cases"][case] for r in rounds]
        cases[case] = {key: round(median([f[key] for f in figures]), 2) for key in figures[0] if key != "errors"}
        cases[case]["errors"] = sum(f["errors"] for f in figures)
    last = rounds[-1]
    return {"cases": cases, "start_to_ready_seconds": round(median([r["start_to_ready_seconds"] for r in rounds]), 2),
            "tree_pss_mib": round(median([r["tree_pss_mib"] for r in rounds]), 1),
            "rss_per_process_mib": last["rss_per_process_mib"], "cpu_per_process": last["cpu_per_process"],
            "rounds": rounds}


def reference(model: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = (images.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def prepare() -> tuple[Path, dict[str, Body], np.ndarray]:
    """The model, the bodies of every case, and in-process ONNX Runtime's answers to check servers against."""
    model = published()
    with np.load(bench_mnist()[0]) as archive:
        x_test = archive["x_test"][:256]
    return model, case_bodies(x_test), reference(model, x_test)


def main() -> dict[str, Any]:
    model, bodies, expected = prepare()
    available = specs(model, 0)
    wanted = os.environ.get("BENCH_PEERS", ",".join(available)).split(",")
    unknown = set(wanted) - set(available)
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}; known: {', '.join(available)}")
    for name in wanted:
        if not name.startswith("ours"):
            ensure_venv(available[name].requirements)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in wanted}
    failed: dict[str, list[str]] = {}
    for round_number in range(ROUNDS):
        order = wanted if round_number % 2 == 0 else list(reversed(wanted))
        for name in order:
            print(f"bench: round {round_number + 1}/{ROUNDS}: {name} (load {load_average()})", flush=True)
            port = free_port()  # a fresh port per start: a server's lingering sockets cannot disturb the next
            try:
                rounds[name].append(one_round(specs(model, port)[name], port, bodies, expected))
            except (RuntimeError, TimeoutError) as error:  # one peer failing (to start) does not void the others
                print(f"bench: {name} failed in round {round_number + 1}: {error}", flush=True)
                failed.setdefault(name, []).append(f"round {round_number + 1} (load {load_average()}): {error}")
    servers = {name: {"what": available[name].what, **pooled(rounds[name])} for name in wanted if rounds[name]}
    result = {"seconds_per_case": SECONDS, "warmup_seconds": WARMUP, "rounds": ROUNDS,
              "model": str(model.relative_to(ROOT)), "servers": servers, "failed": failed,
              "load_after": load_average()}
    if CASE_SUBSET:
        print(f"bench: only {CASE_SUBSET}: not saved as the peers part", flush=True)
    else:
        write_part("peers", result)
    return result


# (case, figure) of the comparison with the best peer: throughput per case, in the unit that case is about.
BEST_CASES = (("A c1", "requests_per_second"), ("A c16", "requests_per_second"), ("B c1", "images_per_second"),
              ("B c4", "images_per_second"), ("C c1", "images_per_second"), ("C c4", "images_per_second"))


def section(peers: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: every server's cases, start, memory and CPU, then ours against the best."""
    servers = peers["servers"]
    cases = [[name, case, figures["requests_per_second"], figures["images_per_second"], figures["p50_ms"],
              figures["p99_ms"], figures["errors"]]
             for name, entry in servers.items() for case, figures in entry["cases"].items()]
    about = [[name, entry["what"], entry["start_to_ready_seconds"], entry["tree_pss_mib"],
              ", ".join(f"{p['name']} {p['rss_mib']}" for p in entry["rss_per_process_mib"]),
              ", ".join(f"{p['name']} {p['cpu_seconds']}" for p in entry["cpu_per_process"])]
             for name, entry in servers.items()]
    versus = "ours" in servers and len(servers) > 1
    failed = "; ".join(f"{name}: {', '.join(reasons)}" for name, reasons in peers.get("failed", {}).items())
    return render("peers", measured=measured(peers), warmup=peers["warmup_seconds"], seconds=peers["seconds_per_case"],
                  rounds=peers["rounds"], failed=f"Rounds that failed (their server's figures come from the others,"
                                                 f" or it is left out): {failed}." if failed else "",
                  cases=table(["server", "case", "req/s", "images/s", "p50 ms", "p99 ms", "errors"], cases),
                  servers=table(["server", "what", "start to ready s", "tree PSS MiB after load",
                                 "RSS MiB per process", "CPU s per process during the load"], about),
                  versus_best=fragment("peers-best", table=table(
                      ["case", "ours", "best peer", "ours / best", "p99 ours / best"], best_rows(servers)))
                  if versus else "")


def ratio(mine: float, theirs: float) -> str:
    return f"{mine / theirs:.2f}" if theirs else ""


def best_case_row(servers: dict[str, Any], case: str, key: str) -> list[Any] | None:
    """Ours (the better of v2 binary and .npy in case C) against the peer with the most `key` in `case`."""
    candidates = [(name, entry["cases"][case]) for name, entry in servers.items()
                  if name != "ours" and case in entry["cases"]]
    if not candidates:
        return None
    best_name, best = max(candidates, key=lambda item: item[1][key])
    mine, label = servers["ours"]["cases"][case], "v2 binary" if case.startswith("C") else ""
    npy = servers["ours"]["cases"].get(f"{case} .npy")
    if npy and npy[key] > mine[key]:
        mine, label = npy, ".npy"
    unit = "req/s" if key == "requests_per_second" else "images/s"
    return [f"{case} ({unit})", f"{mine[key]} {label}".strip() + f" (p99 {mine['p99_ms']} ms)",
            f"{best_name} {best[key]} (p99 {best['p99_ms']} ms)", ratio(mine[key], best[key]),
            ratio(mine["p99_ms"], best["p99_ms"])]


def best_rows(servers: dict[str, Any]) -> list[list[Any]]:
    rows = [row for case, key in BEST_CASES if (row := best_case_row(servers, case, key))]
    ours = servers["ours"]
    smallest = min((entry["tree_pss_mib"], name) for name, entry in servers.items() if name != "ours")
    fastest = min((entry["start_to_ready_seconds"], name) for name, entry in servers.items() if name != "ours")
    rows.append(["tree PSS after load, MiB", ours["tree_pss_mib"], f"{smallest[1]} {smallest[0]}",
                 f"{ours['tree_pss_mib'] / smallest[0]:.2f}", ""])
    rows.append(["start to ready, s", ours["start_to_ready_seconds"], f"{fastest[1]} {fastest[0]}",
                 ratio(ours["start_to_ready_seconds"], fastest[0]), ""])
    return rows


if __name__ == "__main__":
    print(json.dumps(main()))
