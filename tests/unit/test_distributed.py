"""The multi-worker settings and data sharding (trainer/distributed.py), without starting a job."""

from __future__ import annotations

import numpy as np
import pytest

from shared.config import Config, ConfigError
from trainer.distributed import Job, job_from

JOB = {"KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
       "KERAS_DISTRIBUTION_JOB_ADDRESSES": "trainer-0:7777,trainer-1:7777"}


def test_one_process_is_no_job_and_keras_addresses_name_the_coordinator_first() -> None:
    assert job_from(Config.from_env({})) == Job()
    job = job_from(Config.from_env({**JOB, "KERAS_DISTRIBUTION_PROCESS_ID": "1", "DISTRIBUTION_TIMEOUT": "30"}))
    assert job == Job(processes=2, index=1, coordinator="trainer-0:7777", timeout_s=30)
    assert not job.is_chief and job.local_batch(128) == 64


@pytest.mark.parametrize(("changes", "message"), [
    ({"KERAS_BACKEND": "tensorflow"}, "multi-worker training needs KERAS_BACKEND=jax, not tensorflow"),
    ({"KERAS_DISTRIBUTION_JOB_ADDRESSES": ""}, "KERAS_DISTRIBUTION_JOB_ADDRESSES must name the coordinator"),
    ({"KERAS_DISTRIBUTION_PROCESS_ID": "2"}, "KERAS_DISTRIBUTION_PROCESS_ID=2 must be below"),
    ({"BATCH_SIZE": "127"}, "BATCH_SIZE=127 must split evenly over 2 processes"),
])
def test_settings_that_cannot_form_a_job_are_refused(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        job_from(Config.from_env({**JOB, **changes}))


@pytest.mark.parametrize("rows", [1000, 1001, 7])
def test_shards_are_disjoint_equal_and_cover_all_but_the_remainder(rows: int) -> None:
    images, labels = np.arange(rows * 2).reshape(rows, 2), np.arange(rows)
    shards = [Job(processes=3, index=index).shard(images, labels) for index in range(3)]
    assert len({len(shard_labels) for _, shard_labels in shards}) == 1  # the same steps in every process
    taken = np.concatenate([shard_labels for _, shard_labels in shards])
    assert len(set(taken)) == len(taken) == rows - rows % 3
    for shard_images, shard_labels in shards:
        assert np.array_equal(shard_images[:, 1] // 2, shard_labels)  # images stay with their labels
