"""Concurrent prediction load while a new version is published, hot-reloaded and rolled
back; then thousands of requests in a row against one worker's memory.

`make soak` runs the full length (SOAK_SECONDS=60, SOAK_REQUESTS=10000, a real trainer
run publishes the new version); `make test` runs the same code short (10 s, 2,000
requests, the new version published from a copy of version 1). Figures are printed (-s).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import requests
from conftest import run_trainer
from helpers import eventually, every_worker, publish_copy, served

from shared.model_store import ModelStore
from soak.load import BLANK_DIGIT, Load, percentiles

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "10"))
SOAK_REQUESTS = int(os.environ.get("SOAK_REQUESTS", "2000"))
LONG = SOAK_SECONDS >= 60
WORKERS = 2


def wait_until_served(url: str, version: int, timeout: float) -> float:
    """Until every worker serves `version`; the time it happened (time.monotonic())."""
    eventually(lambda: every_worker(url, served(version), 3 * WORKERS), f"version {version} on every worker",
               timeout, interval=0.2)
    return time.monotonic()


def publish_new_version(home: Path, mnist_url: str) -> int:
    """Long run: the real trainer, competing with the server for the CPU. Short: a copy of 1."""
    if LONG:
        result = run_trainer(home, mnist_url, EPOCHS="1", TRAIN_SUBSET="1000", MIN_ACCURACY="0.1")
        assert result.returncode == 0, result.stdout + result.stderr
        return ModelStore(home / "mnist").latest()
    return publish_copy(home)


def test_load_through_publish_hot_reload_and_rollback_fails_nothing(home_copy, mnist_http, start_server) -> None:
    server = start_server(home_copy, WEB_CONCURRENCY=str(WORKERS), THREADS="4")
    phase = SOAK_SECONDS / 4
    with Load(server.url, clients=4) as load:
        started = time.monotonic()
        time.sleep(phase)
        swap_started = time.monotonic()
        new = publish_new_version(home_copy, mnist_http.url())
        wait_until_served(server.url, new, timeout=60)
        time.sleep(phase)
        assert ModelStore(home_copy / "mnist").rollback() == 1
        swap_ended = wait_until_served(server.url, 1, timeout=60)
        time.sleep(max(phase, started + SOAK_SECONDS - time.monotonic()))
        settled = time.monotonic()
    total = time.monotonic() - started
    records = load.records
    failures = load.failures()
    versions = {r.version for r in records}
    before, during, after = (load.window(until=swap_started), load.window(swap_started, swap_ended),
                             load.window(swap_ended, settled))
    print(f"\nsoak {total:.0f} s, {len(records)} requests ({len(records) / total:.0f}/s), {len(failures)} failed,"
          f" versions seen {sorted(v for v in versions if v is not None)}"
          f"\n  before the swap: {percentiles(before)}\n  during publish, reload and rollback: {percentiles(during)}"
          f"\n  after: {percentiles(after)}")
    assert not failures, f"{len(failures)} of {len(records)} failed: {failures[:3]}"
    assert versions <= {1, new}, f"answers named versions that never existed: {versions}"
    assert new in {r.version for r in during}, "the new version never answered"
    assert {r.version for r in before} == {1}
    assert {r.version for r in load.window(swap_ended + 1, settled)} <= {1}, "the retired version kept answering"


def test_thousands_of_requests_in_a_row_keep_worker_memory_flat(trained_home, start_server) -> None:
    # One worker, so every request goes through the process being measured.
    server = start_server(trained_home, WEB_CONCURRENCY="1", THREADS="2")
    worker = psutil.Process(server.process.pid).children()[0]
    session = requests.Session()
    body = {"instances": [BLANK_DIGIT]}

    def run(count: int) -> None:
        for _ in range(count):
            response = session.post(server.url + "/predict", json=body, timeout=30)
            assert response.status_code == 200, response.text

    run(500)  # warm-up: allocator pools, lazily built objects, the first access log lines
    baseline = worker.memory_info().rss
    samples = []
    for _ in range(4):
        run(SOAK_REQUESTS // 4)
        samples.append(worker.memory_info().rss)
    growth = samples[-1] - baseline
    print(f"\n{SOAK_REQUESTS} requests in a row: worker RSS {baseline / 2**20:.1f} MB ->"
          f" {' -> '.join(f'{s / 2**20:.1f}' for s in samples)} MB (growth {growth / 2**20:+.2f} MB)")
    assert worker.is_running() and psutil.Process(server.process.pid).children()[0].pid == worker.pid
    assert growth < 10 * 2**20, f"worker RSS grew by {growth / 2**20:.1f} MB over {SOAK_REQUESTS} requests"

