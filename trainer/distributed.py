"""Training one model over several processes with Keras 3's distribution API (JAX backend).

Every process runs the same trainer with its own process index. They join one JAX job through
the coordinator (process 0's address), replicate the model on every process's devices with
`keras.distribution.DataParallel`, and each feeds its own shard of every global batch; JAX
all-reduces the gradients (over gloo on CPUs), so the weights stay identical in every process.
Only process 0 evaluates, exports and publishes.

`tf.distribute.MultiWorkerMirroredStrategy` is not used: with Keras 3 its `fit` fails
(keras-team/keras#20585).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from shared.config import Config, ConfigError

JAX_BACKEND = "jax"
# How a collective reports a peer that is gone: gloo's closed connection, the coordinator's heartbeat checks.
PEER_LOST_SIGNS = ("Connection closed by peer", "Connection reset", "heartbeat", "UNAVAILABLE")


class DistributionError(RuntimeError):
    """The job cannot be joined or was lost; the message says what to check."""


@dataclass(frozen=True)
class Job:
    """This process's place in the training job; `Job()` is a plain single-process run."""

    processes: int = 1
    index: int = 0
    coordinator: str = ""
    timeout_s: int = 60

    @property
    def is_chief(self) -> bool:
        """Process 0: the one that writes the backup, evaluates and publishes."""
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.processes > 1

    def local_batch(self, global_batch: int) -> int:
        """This process's share of each global batch (the global batch stays what was asked)."""
        if global_batch % self.processes:
            raise DistributionError(
                f"BATCH_SIZE {global_batch} does not split evenly over {self.processes} processes")
        return global_batch // self.processes

    def shard(self, *arrays: np.ndarray) -> list[np.ndarray]:
        """Every `processes`-th row from this process's index on, the same count in every process.

        Equal counts give every process the same number of steps per epoch (a step is a collective,
        so a process with one step more would wait for its peers forever); at most `processes - 1`
        trailing rows are left out.
        """
        rows = len(arrays[0]) - len(arrays[0]) % self.processes
        return [array[:rows][self.index::self.processes] for array in arrays]


def job_from(config: Config) -> Job:
    """This process's `Job` from the settings; ConfigError saying every problem with them."""
    if config.num_processes == 1 and config.process_id == 0:
        return Job()
    problems = []
    if config.process_id >= config.num_processes:
        problems.append(f"KERAS_DISTRIBUTION_PROCESS_ID={config.process_id} must be below"
                        f" KERAS_DISTRIBUTION_NUM_PROCESSES={config.num_processes}")
    if config.keras_backend != JAX_BACKEND:
        problems.append(f"multi-worker training needs KERAS_BACKEND=jax, not {config.keras_backend}")
    if not config.job_addresses.strip():
        problems.append("KERAS_DISTRIBUTION_JOB_ADDRESSES must name the coordinator's host:port")
    if config.batch_size % config.num_processes:
        problems.append(f"BATCH_SIZE={config.batch_size} must split evenly over {config.num_processes} processes")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return Job(config.num_processes, config.process_id, coordinator_of(config.job_addresses),
               config.distribution_timeout)


def coordinator_of(job_addresses: str) -> str:
    """The coordinator in KERAS_DISTRIBUTION_JOB_ADDRESSES: its first `host:port` (as Keras reads it)."""
    return job_addresses.split(",")[0].strip()


def join(job: Job) -> None:
    """Join the job and make Keras train data-parallel over every process's devices.

    Calls `jax.distributed.initialize` itself rather than `keras.distribution.initialize` (which
    does the same call) because only the former takes the timeouts: without them a process whose
    peer died would wait 100 s for heartbeats and 5 min at start-up.
    """
    import jax

    if keras.backend.backend() != JAX_BACKEND:
        raise DistributionError(
            f"training on {job.processes} processes needs KERAS_BACKEND=jax (this run uses {keras.backend.backend()})")
    # Gloo carries the cross-process all-reduce between CPU devices (GPUs use NCCL on their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    print(f"trainer: joining a {job.processes}-process job as process {job.index} (coordinator {job.coordinator},"
          f" timeout {job.timeout_s} s)", flush=True)
    try:
        jax.distributed.initialize(
            coordinator_address=job.coordinator,
            num_processes=job.processes,
            process_id=job.index,
            initialization_timeout=job.timeout_s,
            heartbeat_timeout_seconds=job.timeout_s,
            shutdown_timeout_seconds=job.timeout_s,
        )
    except Exception as error:  # jaxlib raises its own XlaRuntimeError types
        raise DistributionError(
            f"process {job.index} could not join the {job.processes}-process job at {job.coordinator} within"
            f" {job.timeout_s} s: {error}. Are all {job.processes} processes started, with distinct"
            " KERAS_DISTRIBUTION_PROCESS_ID, and is the coordinator reachable?") from None
    distribution = keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    keras.distribution.set_distribution(distribution)
    print(f"trainer: joined; training data-parallel on {len(jax.devices())} devices in {jax.process_count()}"
          " processes", flush=True)


def barrier(name: str) -> None:
    """Wait until every process of the job reaches the barrier called `name`."""
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def leave(model: Any, build_model: Callable[[], Any]) -> Any:
    """Leave the job; returns a single-process copy of the trained `model` (weights and optimizer state).

    The trained variables are arrays over every process's devices: after the job is gone, process 0
    evaluates, saves and exports a model of its own, built outside the distribution.
    """
    import jax

    weights = model.get_weights()
    optimizer_state = [keras.ops.convert_to_numpy(variable.value) for variable in model.optimizer.variables]
    keras.distribution.set_distribution(None)
    jax.distributed.shutdown()  # a barrier: every process has its copy before any goes on
    local = build_model()
    local.set_weights(weights)
    local.optimizer.build(local.trainable_variables)
    for variable, value in zip(local.optimizer.variables, optimizer_state, strict=True):
        variable.assign(value)
    return local


def abandon(job: Job, reason: str) -> None:
    """Say why this process gives up on the job and exit 1 at once.

    `os._exit`, not `sys.exit`: JAX's exit handler would wait for the lost peers at a shutdown
    barrier, then abort with a C++ stack trace instead of this message.
    """
    print(f"trainer: process {job.index} of {job.processes}: {reason}. Not published; start all"
          f" {job.processes} processes again and the run resumes from its last finished epoch.",
          file=sys.stderr, flush=True)
    os._exit(1)


@contextlib.contextmanager
def peers_guard(job: Job) -> Iterator[None]:
    """Turn a collective that fails because a peer is gone into `abandon`'s one clear message."""
    if not job.distributed:
        yield
        return
    try:
        yield
    except Exception as error:  # gloo's "Connection closed by peer" arrives as a ValueError or XlaRuntimeError
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if any(sign in str(error) for sign in PEER_LOST_SIGNS):
            abandon(job, f"lost contact with the other processes of the job ({first_line})")
        traceback.print_exc()
        abandon(job, f"training failed: {first_line}")


class Watchdog(keras.callbacks.Callback):
    """Ends this process when training makes no progress for `job.timeout_s`.

    A peer that dies closes its gloo connections and the step fails at once (the trainer then
    says so), but a peer that hangs, or a network that drops packets, would leave the collective
    waiting forever.
    """

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self.last_progress = time.monotonic()
        self.stopped = threading.Event()

    def _progress(self, *args: Any, **kwargs: Any) -> None:
        self.last_progress = time.monotonic()

    on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = _progress

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._progress()
        threading.Thread(target=self._watch, name="distribution-watchdog", daemon=True).start()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.stopped.set()

    def _watch(self) -> None:
        while not self.stopped.wait(1.0):
            stalled = time.monotonic() - self.last_progress
            if stalled > self.job.timeout_s:
                abandon(self.job, f"no training step finished for {stalled:.0f} s (DISTRIBUTION_TIMEOUT="
                                  f"{self.job.timeout_s}): another process of the job is gone or stuck")


def weights_checksum(weights: list[np.ndarray]) -> str:
    """A short digest of the weights, logged by every process so identical replicas can be checked."""
    digest = hashlib.sha256()
    for array in weights:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
