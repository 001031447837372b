"""Ours against the serving frameworks a user would pick instead, on the same model and bodies.

Each peer runs from its own virtual environment (bench/tmp/peers/<peer>, created here from
bench/peers/requirements-<peer>.txt, pinned) with its server script in bench/peers/: the
trainer's model.onnx in ONNX Runtime with 1 intra-op thread, 2 worker processes or model
instances where the peer has them. Every server gets the same bodies:

    A  batch 1,   v2 JSON (UINT8)            1 and 16 connections
    B  batch 256, v2 JSON (UINT8)            1 and 4 connections
    C  batch 256, binary: the v2 binary tensor extension where the server speaks it, else .npy;
       ours both (v2 binary, and .npy on /predict)   1 and 4 connections

Every answer is checked against in-process ONNX Runtime before anything is timed. Then wrk
(bench/post.lua, one thread) runs each case for BENCH_WARMUP seconds (not counted) and
BENCH_SECONDS seconds; BENCH_ROUNDS rounds alternate the order of the servers, each round
starting every server afresh (start-to-ready is timed from the process start to the first 200
on its readiness route). After the load: RSS of each process, PSS of the process tree, and the
CPU seconds each process spent during the load (psutil).

    python -m bench.peers_bench   # or `make bench-peers`; writes bench/tmp/peers.json
    BENCH_PEERS=ours,kserve BENCH_SECONDS=2 BENCH_ROUNDS=1 python -m bench.peers_bench   # a quick check
    BENCH_PEERS=ours,kserve BENCH_CASES="A c16" python -m bench.peers_bench   # some cases: printed, not saved
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.common import BENCH_HOME, ROOT, TMP, bench_mnist, load_average, median, write_part
from bench.http_bench import COMPOSE_SERVER_ENV, LUA, free_port

PEERS_DIR = ROOT / "bench" / "peers"
VENVS = TMP / "peers"
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "3"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
# A comma-separated subset of the cases; the result is then only printed, so a partial run never
# replaces the part results.md is made from.
CASE_SUBSET = [case for case in os.environ.get("BENCH_CASES", "").split(",") if case]
READY_TIMEOUT = 180
INPUT_NAME = "pixels"
# (case, images per request, body kind, connections)
CASES = (("A c1", 1, "json", 1), ("A c16", 1, "json", 16), ("B c1", 256, "json", 1), ("B c4", 256, "json", 4),
         ("C c1", 256, "binary", 1), ("C c4", 256, "binary", 4))
V2_INFER = "/v2/models/mnist/infer"
V2_READY = "/v2/models/mnist/ready"
BOUNDARY = "bench-peers-boundary"


@dataclass(frozen=True)
class Body:
    path: Path
    content_type: str
    header: str = ""  # one extra "Name: value" header, for wrk (bench/post.lua)


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
    extra_cases: tuple[tuple[str, int, str, int], ...] = ()  # ours: C as .npy on /predict too

    @property
    def cases(self) -> tuple[tuple[str, int, str, int], ...]:
        return CASES + self.extra_cases


def peer_python(peer: str) -> str:
    return str(VENVS / peer / "bin" / "python")


def ensure_venv(peer: str) -> None:
    """bench/tmp/peers/<peer> with bench/peers/requirements-<peer>.txt installed (again when it changed)."""
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
        "ours": Spec("ours", f"gunicorn, {COMPOSE_SERVER_ENV['WEB_CONCURRENCY']} gthread workers x"
                             f" {COMPOSE_SERVER_ENV['THREADS']} thread(s); C as v2 binary, and as .npy on /predict",
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
    }


def v2_json(images: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": INPUT_NAME, "shape": list(images.shape), "datatype": "UINT8",
                                   "data": images.ravel().tolist()}],
                       "outputs": [{"name": "probabilities"}]}).encode()


def v2_binary(images: np.ndarray) -> tuple[bytes, int]:
    header = json.dumps({"inputs": [{"name": INPUT_NAME, "shape": list(images.shape), "datatype": "UINT8",
                                     "parameters": {"binary_data_size": images.nbytes}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}]}).encode()
    return header + images.tobytes(), len(header)


def write_bodies(x_test: np.ndarray) -> dict[str, Body]:
    folder = TMP / "peer-bodies"
    folder.mkdir(parents=True, exist_ok=True)
    bodies = {}
    for size in (1, 256):
        path = folder / f"v2-{size}.json"
        path.write_bytes(v2_json(x_test[:size]))
        bodies[f"json-{size}"] = Body(path, "application/json")
    data, header_length = v2_binary(x_test[:256])
    (folder / "v2-256.bin").write_bytes(data)
    bodies["v2-256"] = Body(folder / "v2-256.bin", "application/octet-stream",
                            f"Inference-Header-Content-Length: {header_length}")
    buffer = io.BytesIO()
    np.save(buffer, x_test[:256])
    (folder / "256.npy").write_bytes(buffer.getvalue())
    bodies["npy-256"] = Body(folder / "256.npy", "application/x-npy")
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"256.npy\"\r\n"
            "Content-Type: application/x-npy\r\n\r\n")
    form = head.encode() + buffer.getvalue() + f"\r\n--{BOUNDARY}--\r\n".encode()
    (folder / "256.multipart").write_bytes(form)
    bodies["multipart-256"] = Body(folder / "256.multipart", f"multipart/form-data; boundary={BOUNDARY}")
    return bodies


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


class Running:
    def __init__(self, spec: Spec, port: int) -> None:
        self.spec = spec
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(TMP / f"peer-{spec.name.replace(' ', '_')}.log", "wb")  # noqa: SIM115 - closed in stop()
        started = time.perf_counter()
        self.process = subprocess.Popen(spec.command, cwd=spec.cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **spec.env}, start_new_session=True)
        self.ready_seconds = round(self._wait_ready(started), 2)

    def _wait_ready(self, started: float) -> float:
        while time.perf_counter() - started < READY_TIMEOUT:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + self.spec.ready_path, timeout=1) as answer:
                    if answer.status == 200 and self.spec.ready_contains in answer.read().decode(errors="replace"):
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.spec.name} not ready after {READY_TIMEOUT} s; see {self.log.name}")

    def post(self, path: str, body: Body) -> dict[str, Any]:
        headers = {"Content-Type": body.content_type}
        if body.header:
            name, value = body.header.split(": ", 1)
            headers[name] = value
        request = urllib.request.Request(self.url + path, data=body.path.read_bytes(), headers=headers)
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.load(answer)

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def stop(self) -> None:
        """SIGTERM to the whole tree (peers start helpers of their own), SIGKILL to what is left after 30 s."""
        try:
            tree = self.tree()
        except psutil.Error:
            tree = []
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _gone, alive = psutil.wait_procs(tree, timeout=30)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)  # anything that left the tree but not the session
        self.process.wait()
        self.log.close()


def wrk(url: str, body: Body, connections: int, seconds: int) -> dict[str, Any]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(LUA), url]
    output = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True,
                            env={**os.environ, "BENCH_BODY": str(body.path), "BENCH_CONTENT_TYPE": body.content_type,
                                 "BENCH_HEADER": body.header}).stdout
    return json.loads(output.strip().splitlines()[-1])


def figures(raw: dict[str, Any], size: int) -> dict[str, Any]:
    """One wrk run (bench/post.lua's JSON line) as the figures the reports use."""
    per_second = raw["requests"] / (raw["duration_us"] / 1e6)
    return {"requests_per_second": round(per_second, 1), "images_per_second": round(per_second * size, 1),
            "p50_ms": round(raw["p50_us"] / 1000, 2), "p99_ms": round(raw["p99_us"] / 1000, 2),
            "errors": raw["socket_errors"] + raw["timeouts"] + raw["non_2xx"]}


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            pass
    return seconds


def memory(processes: list[psutil.Process]) -> dict[str, Any]:
    rss, pss = [], 0.0
    for process in processes:
        try:
            info = process.memory_full_info()
            rss.append({"name": process.name(), "rss_mib": round(info.rss / 2**20, 1)})
            pss += info.pss
        except psutil.Error:
            pass
    return {"rss_per_process_mib": rss, "tree_pss_mib": round(pss / 2**20, 1)}


def check(server: Running, bodies: dict[str, Body], expected: np.ndarray) -> None:
    """Every case's body once: the answer must match in-process ONNX Runtime before anything is timed."""
    for case, size, kind, _connections in server.spec.cases:
        path, body = case_target(server.spec, kind, size, bodies)
        got = probabilities(server.post(path, body))
        if got.shape != (size, 10) or not np.allclose(got, expected[:size], atol=1e-4):
            raise RuntimeError(f"{server.spec.name}, case {case}: answer differs from in-process ONNX Runtime"
                               f" (shape {got.shape}, largest difference"
                               f" {np.abs(got - expected[:size]).max() if got.shape == (size, 10) else 'n/a'})")


def one_round(spec: Spec, port: int, bodies: dict[str, Body], expected: np.ndarray) -> dict[str, Any]:
    server = Running(spec, port)
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


def model_path() -> Path:
    from shared.model_store import ONNX_FILE, ModelStore

    store = ModelStore(BENCH_HOME / "mnist")
    if store.latest() is None:
        raise SystemExit(f"no model in {BENCH_HOME}: run `make bench` first (its training part publishes one)")
    return store.version_dir(store.latest()) / ONNX_FILE


def reference(model: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = (images.astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def prepare() -> tuple[Path, dict[str, Body], np.ndarray]:
    """The model, the bodies of every case, and in-process ONNX Runtime's answers to check servers against."""
    model = model_path()
    with np.load(bench_mnist()[0]) as archive:
        x_test = archive["x_test"][:256]
    return model, write_bodies(x_test), reference(model, x_test)


def main() -> dict[str, Any]:
    model, bodies, expected = prepare()
    available = specs(model, 0)
    wanted = os.environ.get("BENCH_PEERS", ",".join(available)).split(",")
    unknown = set(wanted) - set(available)
    if unknown:
        raise SystemExit(f"unknown servers {sorted(unknown)}; known: {', '.join(available)}")
    for name in wanted:
        if not name.startswith("ours"):
            ensure_venv(name)
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in wanted}
    for round_number in range(ROUNDS):
        order = wanted if round_number % 2 == 0 else list(reversed(wanted))
        for name in order:
            print(f"bench: round {round_number + 1}/{ROUNDS}: {name} (load {load_average()})", flush=True)
            port = free_port()  # a fresh port per start: a server's lingering sockets cannot disturb the next
            rounds[name].append(one_round(specs(model, port)[name], port, bodies, expected))
    servers = {name: {"what": available[name].what, **pooled(rounds[name])} for name in wanted}
    result = {"seconds_per_case": SECONDS, "warmup_seconds": WARMUP, "rounds": ROUNDS,
              "model": str(model.relative_to(ROOT)), "servers": servers, "load_after": load_average()}
    if CASE_SUBSET:
        print(f"bench: only {CASE_SUBSET}: not saved as the peers part", flush=True)
    else:
        write_part("peers", result)
    return result


if __name__ == "__main__":
    print(json.dumps(main()))
