"""The model store in-process: numbered versions, atomic publish, retention, rollback.

Versions here hold small stand-in files; the trainer tests publish real models. A crash mid-publish and
racing publishers need real processes: tests/integration/test_model_store_processes.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from helpers import (
    assert_complete,
    hidden_entries,
    publish_stand_in,
    stamp_metadata,
    write_stand_in_files,
)

from shared.model_store import (
    KERAS_FILE,
    METADATA_FILE,
    RETIRED_PREFIX,
    STAGING_PREFIX,
    ModelStore,
    ModelStoreError,
)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "mnist")


def test_an_empty_or_missing_store_has_no_versions(store):
    assert store.versions() == []
    assert store.latest() is None
    assert store.clean_stale_staging(older_than_s=0) == []


def test_versions_are_listed_and_loaded_by_number(store):
    for token in ("a", "b", "c"):
        publish_stand_in(store, token)
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
    publish_stand_in(store, "a")
    with pytest.raises(ModelStoreError, match="no such model version"):
        store.metadata(2)
    (store.version_dir(1) / METADATA_FILE).write_text("{not json")
    with pytest.raises(ModelStoreError, match="unreadable metadata"):
        store.metadata(1)


def test_a_failing_publish_removes_its_staging_folder(store):
    with pytest.raises(RuntimeError, match="export failed"), store.staging() as staged:
        write_stand_in_files(staged, "half")
        raise RuntimeError("export failed")
    assert store.versions() == []
    assert hidden_entries(store) == []


def test_a_lone_publisher_stamps_once_with_the_number_it_gets(store):
    calls: list[int] = []

    def stamp(folder: Path, version: int) -> None:
        calls.append(version)
        stamp_metadata("x")(folder, version)

    with store.staging() as staged:
        write_stand_in_files(staged, "x")
        assert store.publish(staged, stamp) == 1
    assert calls == [1]


def test_prune_keeps_the_newest_versions(store):
    for token in "abcd":
        publish_stand_in(store, token)
    assert store.prune(2) == [1, 2]
    assert store.versions() == [3, 4]
    assert store.prune(5) == []
    assert hidden_entries(store) == []  # deleted folders are really gone
    assert publish_stand_in(store, "e") == 5


def test_prune_tolerates_a_version_another_trainer_already_deleted(store, monkeypatch):
    for token in "abc":
        publish_stand_in(store, token)
    stale_listing = store.versions()
    ModelStore(store.base_path).prune(2)  # another trainer removes version 1 first
    monkeypatch.setattr(store, "versions", lambda: stale_listing)
    assert store.prune(1) == [2]  # version 1 was not ours to report
    assert ModelStore(store.base_path).versions() == [3]


def test_rollback_retires_the_newest_and_its_number_is_not_reused(store):
    for token in "abc":
        publish_stand_in(store, token)
    assert store.rollback() == 2
    assert store.versions() == [1, 2]
    assert (store.base_path / f"{RETIRED_PREFIX}3" / KERAS_FILE).read_text() == "keras c"  # kept for inspection
    # A server that loaded version 3 must see a newer number for the next model, not 3 again.
    assert publish_stand_in(store, "d") == 4
    assert_complete(store, 4, "d")


def test_only_the_newest_rolled_back_folders_are_kept_and_numbers_stay_unique(store):
    for token in "abcde":
        publish_stand_in(store, token)
    for _ in range(3):
        store.rollback()  # retires 5, 4, 3
    assert store.versions() == [1, 2]
    assert store.prune_retired(2) == [3]
    assert hidden_entries(store) == [f"{RETIRED_PREFIX}4", f"{RETIRED_PREFIX}5"]
    assert store.prune_retired(0) == [4]  # the newest stays whatever `keep` says: it holds the highest number
    assert publish_stand_in(store, "f") == 6  # never 3, 4 or 5 again
    assert store.prune_retired(1) == []


def test_rollback_with_a_single_version_is_a_clear_error(store):
    with pytest.raises(ModelStoreError, match="nothing to roll back to"):
        store.rollback()
    publish_stand_in(store, "only")
    with pytest.raises(ModelStoreError, match=r"nothing to roll back to \(versions: \[1\]\)"):
        store.rollback()
    assert store.versions() == [1]


def test_clean_stale_staging_removes_only_old_leftovers(store):
    publish_stand_in(store, "a")
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
