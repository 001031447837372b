"""Multi-worker training (trainer/distributed.py): two real trainer processes on 127.0.0.1 train one
model with Keras' DataParallel on the JAX backend (gloo collectives between the CPU processes)."""

from __future__ import annotations

import re

import pytest
from conftest import free_port
from trainer_process import TrainerProcess, backups, saved_epochs

from shared.model_store import ModelStore

SLICE = {"KERAS_BACKEND": "jax", "TRAIN_SUBSET": "1000", "EPOCHS": "3", "MIN_ACCURACY": "0.5"}
TIMEOUT_S = 60  # DISTRIBUTION_TIMEOUT in these tests: how long a worker may wait for a lost peer
# Three epochs on 1,000 images: the data order differs between 1 and 2 workers (each shuffles its shard),
# so the accuracies differ by chance; measured 0.85 vs 0.85 here, a few points apart at most.
SAME_ACCURACY_WITHIN = 0.05


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> str:
    """One compilation cache for every run here: only the first run compiles the training step."""
    return str(tmp_path_factory.mktemp("jax-cache"))


def start_workers(home, url: str, jax_cache: str, count: int = 2, **env: str) -> list[TrainerProcess]:
    job = {
        "KERAS_DISTRIBUTION_NUM_PROCESSES": str(count),
        "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{free_port()}",
        "DISTRIBUTION_TIMEOUT": str(TIMEOUT_S),
        "JAX_COMPILATION_CACHE_DIR": jax_cache,
    }
    return [
        TrainerProcess(home, url, **{**SLICE, **job, "KERAS_DISTRIBUTION_PROCESS_ID": str(index), **env})
        for index in range(count)
    ]


def checksum(worker: TrainerProcess) -> str:
    match = re.search(r"trained weights checksum ([0-9a-f]{16})", worker.output())
    assert match, worker.output()
    return match[1]


def test_two_workers_train_one_model_survive_a_kill_by_resuming_and_match_one_worker(tmp_path, mnist_http, jax_cache):
    home = tmp_path / "two"
    chief, other = start_workers(home, mnist_http.url(), jax_cache)
    other.wait_for_line(r"^epoch 2/3:", timeout=600)
    # process 0 writes the backup just after the line
    chief.wait_for(lambda: saved_epochs(home) >= 2, "a backup of two epochs", timeout=60)
    other.kill()
    assert chief.finish(timeout=TIMEOUT_S + 60) == 1, chief.output()  # bounded: no hang on a dead peer
    assert re.search(r"process 0 of 2: (lost contact with the other processes|no training step finished)",
                     chief.output()), chief.output()
    assert "start all 2 processes again and the run resumes" in chief.output()
    assert "Traceback" not in chief.output()
    store = ModelStore(home / "mnist")
    assert store.versions() == []

    workers = start_workers(home, mnist_http.url(), jax_cache)
    assert [worker.finish() for worker in workers] == [0, 0], "\n\n".join(w.output() for w in workers)
    chief, other = workers
    for worker in workers:
        assert "resuming from epoch 3 of 3" in worker.output(), worker.output()
        assert worker.epochs_run() == [3]
    assert checksum(chief) == checksum(other)  # the replicas never diverged
    assert "published version 1" in chief.output()
    assert "process 1 of 2 done; process 0 evaluates and publishes" in other.output()
    assert "published" not in other.output() and "test accuracy" not in other.output()
    assert store.versions() == [1]
    two = store.metadata(1)
    assert two["hyperparameters"]["train_images"] == 1000 and two["hyperparameters"]["batch_size"] == 128
    assert [entry["epoch"] for entry in two["history"]] == [1, 2, 3]
    assert backups(home) == []  # published: nothing to resume

    alone = TrainerProcess(tmp_path / "one", mnist_http.url(), **SLICE, JAX_COMPILATION_CACHE_DIR=jax_cache)
    assert alone.finish() == 0, alone.output()
    one = ModelStore(tmp_path / "one" / "mnist").metadata(1)
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=SAME_ACCURACY_WITHIN)
