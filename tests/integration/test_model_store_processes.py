"""The model store under real processes (spawned, so no TensorFlow state is forked) on a real filesystem:
a publisher killed mid-write leaves no version, and racing publishers get distinct, complete versions.
The in-process store tests are tests/unit/test_model_store.py."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
from helpers import assert_complete, hidden_entries, publish_stand_in, stamp_metadata, write_stand_in_files

from shared.model_store import KERAS_FILE, STAGING_PREFIX, ModelStore

SPAWN = multiprocessing.get_context("spawn")
PUBLISHERS = 4


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "mnist")


def crash_while_staging(base_path: str) -> None:
    """Child process: writes half a version, then dies as if the OOM killer struck."""
    store = ModelStore(Path(base_path))
    with store.staging() as staged:
        (staged / KERAS_FILE).write_text("half-written")
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_crash_mid_publish_leaves_no_version_and_the_next_publish_works(store):
    publish_stand_in(store, "good")
    child = SPAWN.Process(target=crash_while_staging, args=(str(store.base_path),))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    leftovers = hidden_entries(store)
    assert len(leftovers) == 1 and leftovers[0].startswith(STAGING_PREFIX)  # the crash really happened mid-write
    assert store.versions() == [1]  # readers still see only the good version

    assert publish_stand_in(store, "next") == 2
    assert_complete(store, 2, "next")

    # A fresh staging folder may belong to a live publisher: only old ones are cleaned.
    assert store.clean_stale_staging() == []
    removed = store.clean_stale_staging(older_than_s=0)
    assert [p.name for p in removed] == leftovers
    assert hidden_entries(store) == []


def race_to_publish(base_path: str, token: str, barrier, stamps, results) -> None:
    """Child process: publish, held at its first stamp until every publisher is there.

    All of them have then chosen the same next number, so all but one must lose the rename
    and retry: the race is forced, not left to luck.
    """
    store = ModelStore(Path(base_path))
    write_metadata = stamp_metadata(token)
    waits_left = [1]  # only the first stamp waits for the others

    def stamp(folder: Path, version: int) -> None:
        write_metadata(folder, version)
        stamps.put((token, version))
        if waits_left:
            waits_left.pop()
            barrier.wait(60)

    with store.staging() as staged:
        write_stand_in_files(staged, token)
        results.put((token, store.publish(staged, stamp)))


def test_concurrent_publishers_get_distinct_complete_versions(store):
    publish_stand_in(store, "first")
    barrier, stamps, results = SPAWN.Barrier(PUBLISHERS), SPAWN.Queue(), SPAWN.Queue()
    racers = [
        SPAWN.Process(target=race_to_publish, args=(str(store.base_path), f"racer-{n}", barrier, stamps, results))
        for n in range(PUBLISHERS)
    ]
    for racer in racers:
        racer.start()
    published = dict(results.get(timeout=120) for _ in racers)
    for racer in racers:
        racer.join(60)
        assert racer.exitcode == 0

    assert sorted(published.values()) == list(range(2, 2 + PUBLISHERS))
    for token, version in published.items():
        assert_complete(store, version, token)  # metadata.json's number matches the folder it landed in
    tried: dict[str, list[int]] = {}
    while not stamps.empty():
        token, version = stamps.get(timeout=10)
        tried.setdefault(token, []).append(version)
    assert all(versions[0] == 2 for versions in tried.values())  # everyone went for version 2 first ...
    assert sum(len(versions) for versions in tried.values()) > PUBLISHERS  # ... so the losers re-stamped
    assert hidden_entries(store) == []
