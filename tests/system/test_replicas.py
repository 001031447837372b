"""Server replicas behind HAProxy, through real containers (docker-compose.yml's `proxy` service).

One compose stack for the module (the test override: a short training run on a slice, one gunicorn
worker per replica), driven like a person would: `docker compose up --scale server=N`, `docker kill`,
`make retrain`. Load is bounded and goes to 127.0.0.1 only.

- 1 -> 2 replicas: batch-1 requests/s through the proxy, both replicas answering;
- 3 replicas, `docker kill` of one under a steady stream: no failed request, the proxy marks it
  down, and up again once `docker compose up` has restarted it;
- `make retrain` under the stream: no failed request, every replica serves the new version, and no
  replica goes back to an older version once the client has seen the newer one from it.

Timings are measured and reported (test-artifacts/replicas.json, stdout), never asserted.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import ROOT, SHARED_MNIST
from helpers import MIN_ACCURACY, eventually, first_test_digits, run_client
from test_compose import ARTIFACTS, BUILD_TIMEOUT, READY_TIMEOUT, PredictionStream, Stack, brought_down, require_docker

REPLICAS = 3
MARK_TIMEOUT = 30  # seconds for the proxy to take a replica out of, or back into, the pool
CONVERGE_TIMEOUT = 30  # seconds after a publish for every replica to serve it (RELOAD_INTERVAL is 1 s here)
STREAM_PAUSE = 0.02  # between the stream's requests: a steady flow that leaves cores to the trainer
THROUGHPUT_SECONDS = 4.0
THROUGHPUT_CLIENTS = 4  # concurrent keep-alive clients (wrk: twice as many connections)
THROUGHPUT_ROUNDS = 2  # 1, 2, 1, 2 replicas: a busy spell on the shared cores hits both sides
MAX_THROUGHPUT_REQUESTS = 20_000
# The measured figures, written to test-artifacts/replicas.json when the module's stack goes down.
RESULTS: dict[str, object] = {}


class ProxyStats:
    """HAProxy's view of the pool, from its loopback stats port (CSV page and Prometheus exporter)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def servers(self) -> list[dict[str, str]]:
        text = requests.get(self.url + "/stats;csv", timeout=5).text.removeprefix("# ")
        return [row for row in csv.DictReader(io.StringIO(text)) if row["pxname"] == "servers"
                and row["svname"].startswith("srv")]

    def answered(self) -> dict[str, int]:
        """2xx answers so far per replica (address) the proxy sends to."""
        return {row["addr"]: int(row["hrsp_2xx"]) for row in self.servers() if self.sends_to(row)}

    def up(self) -> set[str]:
        """Addresses (ip:port) of the replicas the proxy sends requests to."""
        return {row["addr"] for row in self.servers() if self.sends_to(row)}

    @staticmethod
    def sends_to(row: dict[str, str]) -> bool:
        # "UP 1/3" is a server failing its checks but not yet down: HAProxy still sends to it and counts
        # it active, so it is up until its status reads DOWN (or MAINT).
        return row["status"].startswith("UP")

    def active_servers(self) -> int:
        """The exporter's count of usable replicas (haproxy_backend_active_servers)."""
        for line in requests.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line.startswith('haproxy_backend_active_servers{proxy="servers"}'):
                return int(float(line.split()[-1]))
        raise AssertionError("no haproxy_backend_active_servers for the servers backend in /metrics")

    def wait(self, condition: Callable[[set[str]], bool], what: str, timeout: float = MARK_TIMEOUT) -> float:
        """Seconds until `condition(up addresses)` holds."""
        took = eventually(lambda: condition(self.up()), f"proxy: {what}", timeout, interval=0.2,
                          detail=lambda: f"up: {sorted(self.up())}")
        return round(took, 2)


class ReplicaStack(Stack):
    def __init__(self) -> None:
        # Own image names: a parallel run of the compose test (or a developer's stack) keeps its own.
        super().__init__("mnist-replicas", IMAGE_PREFIX="mnist-replicas-test")
        self.proxy = ProxyStats(self.stats_url)

    def scale(self, replicas: int) -> None:
        """`docker compose up --scale server=N`, then until the proxy uses exactly those N replicas."""
        self.run("up", "-d", "--wait", "--scale", f"server={replicas}", timeout=READY_TIMEOUT)
        addresses = {f"{self.address(container)}:8000" for container in self.containers()}
        assert len(addresses) == replicas
        self.proxy.wait(lambda up: up == addresses, f"exactly the {replicas} running replicas up")

    def containers(self) -> list[str]:
        return self.run("ps", "-q", "server").split()

    def address(self, container: str) -> str:
        return self._run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                          container], 30).strip()

    def models(self, container: str) -> dict:
        """One replica's own /models, asked inside its container (not through the proxy)."""
        ask = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/models', timeout=5).read().decode())"
        return json.loads(self._run(["docker", "exec", container, "python", "-c", ask], 60))


@pytest.fixture(scope="module")
def stack() -> Iterator[ReplicaStack]:
    """One stack for the module (a build and a first training run are minutes). Safe to share: each test first
    scales the replicas to what it needs and reads versions relative to the one served, so any order passes."""
    require_docker()
    with brought_down(ReplicaStack()) as stack:
        try:
            stack.run("build", timeout=BUILD_TIMEOUT)
            stack.run("up", "-d", "--wait", timeout=READY_TIMEOUT)
            yield stack
        finally:
            ARTIFACTS.mkdir(exist_ok=True)
            (ARTIFACTS / "replicas.json").write_text(json.dumps(RESULTS, indent=2) + "\n")
            print(f"replicas: {RESULTS}")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return first_test_digits(SHARED_MNIST, 32)[0]


def python_throughput(url: str, image: list) -> float:
    """Batch-1 requests/s from THROUGHPUT_CLIENTS keep-alive `requests` clients (threads)."""
    counts: list[int] = []
    failures: list[str] = []
    started = time.monotonic()
    deadline = started + THROUGHPUT_SECONDS

    def client() -> None:
        session, count = requests.Session(), 0
        while time.monotonic() < deadline and count < MAX_THROUGHPUT_REQUESTS // THROUGHPUT_CLIENTS:
            response = session.post(url + "/predict", json={"instances": [image]}, timeout=15)
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text[:200]}")
                return
            count += 1
        counts.append(count)

    threads = [threading.Thread(target=client) for _ in range(THROUGHPUT_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=THROUGHPUT_SECONDS + 60)
    assert not failures, failures[:5]
    return sum(counts) / (time.monotonic() - started)


def wrk_throughput(wrk: str, url: str, image: list, folder: Path) -> float:
    """Batch-1 requests/s from wrk (THROUGHPUT_CLIENTS connections), which costs the shared cores far
    less per request than Python's client, so it can load two replicas."""
    body, script = folder / "body.json", folder / "post.lua"
    body.write_text(json.dumps({"instances": [image]}))
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "r"); wrk.body = f:read("*a"); f:close()\n')
    # wrk's own 2 s timeout would count a slow answer on the busy shared cores as an error.
    command = [wrk, "-t2", f"-c{THROUGHPUT_CLIENTS * 2}", f"-d{THROUGHPUT_SECONDS:.0f}s", "--timeout", "15s",
               "-s", str(script), url + "/predict"]
    output = subprocess.run(command, capture_output=True, text=True, timeout=THROUGHPUT_SECONDS + 60).stdout
    assert "Non-2xx" not in output, output
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    assert not errors or set(errors.groups()) == {"0"}, output
    rate = re.search(r"^Requests/sec:\s+([\d.]+)$", output, flags=re.MULTILINE)
    assert rate, output
    return float(rate.group(1))


def test_a_second_replica_raises_throughput_through_the_proxy(stack: ReplicaStack, digits: np.ndarray,
                                                              tmp_path: Path) -> None:
    # wrk is Debian's (`make bench` installs it); without it, Python's client, which saturates first.
    wrk = shutil.which("wrk")
    rates: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(THROUGHPUT_ROUNDS):
        for replicas in (1, 2):
            stack.scale(replicas)
            before = stack.proxy.answered()
            if wrk:
                rate = wrk_throughput(wrk, stack.url, digits[0].tolist(), tmp_path)
            else:
                rate = python_throughput(stack.url, digits[0].tolist())
            after = stack.proxy.answered()
            # Round-robin: every replica the proxy knows took its share.
            assert len(after) == replicas and all(after[slot] > before.get(slot, 0) for slot in after), (before, after)
            assert rate > 0
            rates[replicas].append(round(rate, 1))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    RESULTS["throughput_requests_per_s"] = {"client": "wrk" if wrk else "python requests", "1_replica": rates[1],
                                            "2_replicas": rates[2], "ratio_of_medians": round(two / one, 2)}


def test_killing_a_replica_under_load_fails_no_request(stack: ReplicaStack, digits: np.ndarray) -> None:
    stack.scale(REPLICAS)
    stream = PredictionStream(stack.url + "/predict", digits, STREAM_PAUSE)
    try:
        stream.wait_for(30)
        victim = stack.containers()[0]
        address = f"{stack.address(victim)}:8000"
        assert address in stack.proxy.up()
        killed = time.monotonic()
        stack._run(["docker", "kill", victim], 60)
        marked_down_s = stack.proxy.wait(lambda up: address not in up and len(up) == REPLICAS - 1,
                                         f"{address} marked down after docker kill")
        assert stack.proxy.active_servers() == REPLICAS - 1
        stream.wait_for(60)  # the stream goes on through the two left
        # `docker compose up` starts the killed replica again; the proxy takes it back.
        stack.run("up", "-d", "--wait", "--scale", f"server={REPLICAS}", timeout=READY_TIMEOUT)
        addresses = {f"{stack.address(container)}:8000" for container in stack.containers()}
        back_up_s = stack.proxy.wait(lambda up: up == addresses and len(up) == REPLICAS, "the restarted replica up")
        assert stack.proxy.active_servers() == REPLICAS
        seen_before = len(stream.answers)
        stream.wait_for(60)
        assert len({answer.served_by for answer in stream.answers[seen_before:]}) == REPLICAS
    finally:
        stream.finish()
    assert not stream.failures, f"{len(stream.failures)} failed requests around the kill: {stream.failures[:5]}"
    answered = [answer for answer in stream.answers if answer.at >= killed]
    RESULTS["kill"] = {"requests": len(stream.answers), "requests_after_kill": len(answered),
                       "failed": len(stream.failures), "marked_down_s": marked_down_s,
                       "up_after_restart_s": back_up_s}


def test_retrain_under_load_reaches_every_replica_and_never_goes_back(stack: ReplicaStack,
                                                                      digits: np.ndarray) -> None:
    stack.scale(REPLICAS)
    before = requests.get(stack.url + "/models", timeout=10).json()["served_version"]
    new = before + 1
    stream = PredictionStream(stack.url + "/predict", digits, STREAM_PAUSE)
    try:
        stream.wait_for(30)
        # `make retrain` as a person runs it; the trainer's "published version N" line is the moment
        # the new version exists in the store.
        retrain = subprocess.Popen(
            ["make", "--no-print-directory", "retrain", f"COMPOSE={stack.compose}", "EPOCHS=1"],
            cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        published_at, output = None, []
        assert retrain.stdout is not None
        for line in retrain.stdout:
            output.append(line)
            if published_at is None and f"published version {new}" in line:
                published_at = time.monotonic()
        assert retrain.wait(timeout=600) == 0, "".join(output)[-6000:]
        assert published_at is not None, "".join(output)[-6000:]
        # Every replica, by the slot name X-Served-By carries (one busy during training may have been
        # out of the pool for a moment: wait until all are back).
        stack.proxy.wait(lambda up: len(up) == REPLICAS, f"all {REPLICAS} replicas up after the retrain")
        slots = {row["svname"] for row in stack.proxy.servers() if row["status"] == "UP"}

        def first_new_answers() -> dict[str, float]:
            return {slot: min((a.at for a in stream.answers if a.served_by == slot and a.version == new),
                              default=float("inf")) for slot in slots}

        eventually(lambda: max(first_new_answers().values()) < float("inf") or stream.failures,
                   f"version {new} from every replica", CONVERGE_TIMEOUT, interval=0.2)
        converged_s = round(max(first_new_answers().values()) - published_at, 2)
        stream.wait_for(30)
    finally:
        stream.finish()
    assert not stream.failures, f"{len(stream.failures)} failed requests during the retrain: {stream.failures[:5]}"
    assert {before, new} <= {answer.version for answer in stream.answers}
    # Per replica, versions never go down: once it answered `new`, it never answers `before` again.
    for slot in slots:
        versions = [answer.version for answer in stream.answers if answer.served_by == slot]
        assert versions == sorted(versions), f"{slot} went back to an older version: {versions}"
    # Each replica's own /models (not through the proxy) says it serves the new version.
    for container in stack.containers():
        assert stack.models(container)["served_version"] == new
    RESULTS["retrain"] = {"replicas": REPLICAS, "requests": len(stream.answers), "failed": len(stream.failures),
                          "publish_to_all_replicas_s": converged_s, "reload_interval_s": 1}


# -- gRPC through the same stack (docs/grpc.md): HAProxy's :8001, h2c, the `grpc` service's replicas --------

GRPC_REPLICAS = 2


def test_grpc_calls_on_one_connection_are_spread_over_both_replicas(stack: ReplicaStack, digits: np.ndarray) -> None:
    from grpc_stream import channel, infer, wait_pool

    stack.run("up", "-d", "--wait", "--scale", f"grpc={GRPC_REPLICAS}", timeout=READY_TIMEOUT)
    wait_pool(stack.stats_url, GRPC_REPLICAS, MARK_TIMEOUT)
    with channel(stack.grpc_address) as opened:  # one HTTP/2 connection: balanced per call, not per connection
        answers = [infer(opened, image) for image in digits[:20]]
    assert len({served_by for _label, served_by in answers}) == GRPC_REPLICAS, answers
    with np.load(SHARED_MNIST) as mnist:
        assert np.mean([label for label, _ in answers] == mnist["y_test"][:20]) > 0.5


def test_killing_a_grpc_replica_under_a_stream_fails_no_call(stack: ReplicaStack, digits: np.ndarray) -> None:
    from grpc_stream import GrpcStream, wait_pool

    stack.run("up", "-d", "--wait", "--scale", f"grpc={GRPC_REPLICAS}", timeout=READY_TIMEOUT)
    wait_pool(stack.stats_url, GRPC_REPLICAS, MARK_TIMEOUT)
    stream = GrpcStream(stack.grpc_address, digits, STREAM_PAUSE)
    try:
        stream.wait_for(30)
        victim = stack.run("ps", "-q", "grpc").split()[0]
        killed = len(stream.served_by)
        stack._run(["docker", "kill", victim], 60)
        wait_pool(stack.stats_url, GRPC_REPLICAS - 1, MARK_TIMEOUT)
        stream.wait_for(60)  # the stream goes on through the one left
    finally:
        stream.finish()
    assert not stream.failures, f"{len(stream.failures)} failed calls around the kill: {stream.failures[:5]}"
    RESULTS["grpc_kill"] = {"calls": len(stream.served_by), "calls_after_kill": len(stream.served_by) - killed,
                            "failed": len(stream.failures)}


def test_real_grpc_clients_through_the_proxy(stack: ReplicaStack, tmp_path: Path) -> None:
    """tritonclient.grpc (its raw-contents default, typed contents, the served and a numbered version, BYTES PNG)
    and kserve's InferenceGRPCClient, unmodified, through HAProxy's h2c port to two gRPC replicas."""
    from grpc_stream import wait_pool


    stack.run("up", "-d", "--wait", "--scale", f"grpc={GRPC_REPLICAS}", timeout=READY_TIMEOUT)
    wait_pool(stack.stats_url, GRPC_REPLICAS, MARK_TIMEOUT)
    with np.load(SHARED_MNIST) as mnist:
        images, labels = mnist["x_test"][:64], mnist["y_test"][:64]
    np.save(tmp_path / "digits.npy", images)
    said = run_client("triton", stack.grpc_address, tmp_path / "digits.npy", token="")  # the stack has no token
    assert said["live_ready"] == [True, True, True, True]
    assert said["raw 1"]["version"] == "1" and said["raw 1"]["raw"] == 2
    for case in ("raw served", "raw 1"):
        assert (np.array(said[case]["labels"]) == labels).mean() > MIN_ACCURACY
    assert said["typed"]["labels"] == said["raw served"]["labels"]
    assert (np.array(said["png"]) == labels[:16]).mean() > MIN_ACCURACY - 0.1
    assert said["unknown version"][0] == "StatusCode.NOT_FOUND"
    said = run_client("kserve", stack.grpc_address, tmp_path / "digits.npy", token="")
    assert said["live_ready"] == [True, True, True]
    assert said["raw"]["labels"] == said["typed"]["labels"]
    assert (np.array(said["raw"]["labels"]) == labels).mean() > MIN_ACCURACY

