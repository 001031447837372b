"""The model store: numbered versions, atomic publish (crash, race), retention, rollback.

Versions here hold small stand-in files; the trainer tests publish real models. Crashes and
races use real processes (spawned, so no TensorFlow state is forked) on a real filesystem.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from shared.model_store import (
    KERAS_FILE,
    METADATA_FILE,
    ONNX_FILE,
    RETIRED_PREFIX,
    STAGING_PREFIX,
    ModelStore,
    ModelStoreError,
)

SPAWN = multiprocessing.get_context("spawn")
PUBLISHERS = 4


def write_model_files(folder: Path, token: str) -> None:
    (folder / KERAS_FILE).write_text(f"keras {token}")
    (folder / ONNX_FILE).write_text(f"onnx {token}")


def stamp_metadata(token: str):
    def stamp(folder: Path, version: int) -> None:
        (folder / METADATA_FILE).write_text(json.dumps({"version": version, "token": token}))

    return stamp


def publish(store: ModelStore, token: str) -> int:
    with store.staging() as staged:
        write_model_files(staged, token)
        return store.publish(staged, stamp_metadata(token))


def assert_complete(store: ModelStore, version: int, token: str) -> None:
    """The folder holds every file, all from the same publisher, and records its own number."""
    folder = store.version_dir(version)
    assert sorted(p.name for p in folder.iterdir()) == sorted([KERAS_FILE, ONNX_FILE, METADATA_FILE])
    assert (folder / KERAS_FILE).read_text() == f"keras {token}"
    assert (folder / ONNX_FILE).read_text() == f"onnx {token}"
    assert store.metadata(version) == {"version": version, "token": token}


def hidden_entries(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.base_path.iterdir() if not p.name.isdigit())


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "mnist")


def test_an_empty_or_missing_store_has_no_versions(store):
    assert store.versions() == []
    assert store.latest() is None
    assert store.clean_stale_staging(older_than_s=0) == []


def test_versions_are_listed_and_loaded_by_number(store):
    for token in ("a", "b", "c"):
        publish(store, token)
    # Things in the base folder that are not versions: a file with a number for a name, other folders.
    (store.base_path / "7").write_text("not a folder")
    (store.base_path / "notes").mkdir()
    (store.base_path / f"{RETIRED_PREFIX}9").mkdir()
    assert store.versions() == [1, 2, 3]
    assert store.latest() == 3
    assert store.has_version(2) and not store.has_version(4)
    for version, token in [(1, "a"), (2, "b"), (3, "c")]:
        assert_complete(store, version, token)


def test_metadata_of_a_missing_or_broken_version_is_a_clear_error(store):
    publish(store, "a")
    with pytest.raises(ModelStoreError, match="no such model version"):
        store.metadata(2)
    (store.version_dir(1) / METADATA_FILE).write_text("{not json")
    with pytest.raises(ModelStoreError, match="unreadable metadata"):
        store.metadata(1)


def test_a_failing_publish_removes_its_staging_folder(store):
    with pytest.raises(RuntimeError, match="export failed"), store.staging() as staged:
        write_model_files(staged, "half")
        raise RuntimeError("export failed")
    assert store.versions() == []
    assert hidden_entries(store) == []


def crash_while_staging(base_path: str) -> None:
    """Child process: writes half a version, then dies as if the OOM killer struck."""
    store = ModelStore(Path(base_path))
    with store.staging() as staged:
        (staged / KERAS_FILE).write_text("half-written")
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_crash_mid_publish_leaves_no_version_and_the_next_publish_works(store):
    publish(store, "good")
    child = SPAWN.Process(target=crash_while_staging, args=(str(store.base_path),))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    leftovers = hidden_entries(store)
    assert len(leftovers) == 1 and leftovers[0].startswith(STAGING_PREFIX)  # the crash really happened mid-write
    assert store.versions() == [1]  # readers still see only the good version

    assert publish(store, "next") == 2
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
        write_model_files(staged, token)
        results.put((token, store.publish(staged, stamp)))


def test_concurrent_publishers_get_distinct_complete_versions(store):
    publish(store, "first")
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


def test_a_lone_publisher_stamps_once_with_the_number_it_gets(store):
    calls: list[int] = []

    def stamp(folder: Path, version: int) -> None:
        calls.append(version)
        stamp_metadata("x")(folder, version)

    with store.staging() as staged:
        write_model_files(staged, "x")
        assert store.publish(staged, stamp) == 1
    assert calls == [1]


def test_prune_keeps_the_newest_versions(store):
    for token in "abcd":
        publish(store, token)
    assert store.prune(2) == [1, 2]
    assert store.versions() == [3, 4]
    assert store.prune(5) == []
    assert hidden_entries(store) == []  # deleted folders are really gone
    assert publish(store, "e") == 5


def test_prune_tolerates_a_version_another_trainer_already_deleted(store, monkeypatch):
    for token in "abc":
        publish(store, token)
    stale_listing = store.versions()
    ModelStore(store.base_path).prune(2)  # another trainer removes version 1 first
    monkeypatch.setattr(store, "versions", lambda: stale_listing)
    assert store.prune(1) == [2]  # version 1 was not ours to report
    assert ModelStore(store.base_path).versions() == [3]


def test_rollback_retires_the_newest_and_its_number_is_not_reused(store):
    for token in "abc":
        publish(store, token)
    assert store.rollback() == 2
    assert store.versions() == [1, 2]
    assert (store.base_path / f"{RETIRED_PREFIX}3" / KERAS_FILE).read_text() == "keras c"  # kept for inspection
    # A server that loaded version 3 must see a newer number for the next model, not 3 again.
    assert publish(store, "d") == 4
    assert_complete(store, 4, "d")


def test_only_the_newest_rolled_back_folders_are_kept_and_numbers_stay_unique(store):
    for token in "abcde":
        publish(store, token)
    for _ in range(3):
        store.rollback()  # retires 5, 4, 3
    assert store.versions() == [1, 2]
    assert store.prune_retired(2) == [3]
    assert hidden_entries(store) == [f"{RETIRED_PREFIX}4", f"{RETIRED_PREFIX}5"]
    assert store.prune_retired(0) == [4]  # the newest stays whatever `keep` says: it holds the highest number
    assert publish(store, "f") == 6  # never 3, 4 or 5 again
    assert store.prune_retired(1) == []


def test_rollback_with_a_single_version_is_a_clear_error(store):
    with pytest.raises(ModelStoreError, match="nothing to roll back to"):
        store.rollback()
    publish(store, "only")
    with pytest.raises(ModelStoreError, match=r"nothing to roll back to \(versions: \[1\]\)"):
        store.rollback()
    assert store.versions() == [1]


def test_clean_stale_staging_removes_only_old_leftovers(store):
    publish(store, "a")
    old = store.base_path / f"{STAGING_PREFIX}old"
    fresh = store.base_path / f"{STAGING_PREFIX}fresh"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / KERAS_FILE).write_text("partial")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.clean_stale_staging(older_than_s=600) == [old]
    assert fresh.is_dir() and not old.exists()
    assert store.versions() == [1]  # versions are never touched
