"""ModelManager in-process on stand-in models: the life cycle tests/integration/test_server_reload.py drives
through a real gunicorn, here in milliseconds (no trained model, no process, no thread: `poll()` by hand)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from conftest import StandInModel

from server.errors import NotFound, Unavailable
from server.model_manager import ModelManager
from shared.config import Config
from shared.model_store import METADATA_FILE

BROKEN = "broken"  # a file in a version folder that makes the stand-in loader fail, like a garbled model.onnx


def add_version(home: Path, version: int, broken: bool = False) -> Path:
    folder = home / "mnist" / str(version)
    folder.mkdir(parents=True)
    (folder / METADATA_FILE).write_text(json.dumps({"version": version}))
    if broken:
        (folder / BROKEN).write_text("not a model")
    return folder


class Loader:
    """Loads a StandInModel unless the folder is marked broken; counts loads per version."""

    def __init__(self) -> None:
        self.loads: list[int] = []

    def __call__(self, _backend: str, folder: Path, _threads: int) -> StandInModel:
        self.loads.append(int(folder.name))
        if (folder / BROKEN).exists():
            raise ValueError("this is not an ONNX model")
        return StandInModel()


@pytest.fixture
def loader() -> Loader:
    return Loader()


def manager_for(home: Path, loader: Loader, **settings) -> ModelManager:
    return ModelManager(Config(home=home, **settings), loader)


def test_an_empty_store_says_it_waits_for_the_trainer_and_logs_it_once(tmp_path, loader, caplog) -> None:
    manager = manager_for(tmp_path, loader)
    with caplog.at_level(logging.INFO, logger="server.model_manager"):
        for _ in range(3):
            manager.poll()
    assert manager.current is None
    with pytest.raises(Unavailable, match="waiting for the trainer"):
        manager.get()
    waiting = [r for r in caplog.records if "waiting for a first model" in r.getMessage()]
    assert len(waiting) == 1, caplog.text
    add_version(tmp_path, 1)
    with caplog.at_level(logging.INFO, logger="server.model_manager"):
        manager.poll()
    assert manager.get().version == 1
    assert sum("loaded model version 1" in r.getMessage() for r in caplog.records) == 1, caplog.text


def test_the_newest_loadable_version_serves_and_a_broken_one_is_remembered(tmp_path, loader) -> None:
    add_version(tmp_path, 1)
    manager = manager_for(tmp_path, loader)
    manager.poll()
    add_version(tmp_path, 2, broken=True)
    for _ in range(3):
        manager.poll()
    assert manager.get().version == 1
    assert loader.loads == [1, 2], "a failed version is not loaded again on every poll"
    assert [f["version"] for f in manager.failures()] == [2]
    with pytest.raises(Unavailable, match="model version 2 failed to load: ValueError"):
        manager.get(2)


def test_a_replaced_folder_is_tried_again(tmp_path, loader) -> None:
    add_version(tmp_path, 1)
    add_version(tmp_path, 2, broken=True)
    manager = manager_for(tmp_path, loader)
    manager.poll()
    assert manager.get().version == 1
    shutil.rmtree(tmp_path / "mnist" / "2")
    add_version(tmp_path, 2)
    manager.poll()
    assert manager.get().version == 2 and manager.failures() == []


def test_a_rollback_serves_the_now_newest_version(tmp_path, loader) -> None:
    add_version(tmp_path, 1)
    add_version(tmp_path, 2)
    manager = manager_for(tmp_path, loader)
    manager.poll()
    assert manager.get().version == 2
    shutil.rmtree(tmp_path / "mnist" / "2")
    manager.poll()
    assert manager.get().version == 1
    with pytest.raises(NotFound, match=r"versions in the store: \[1\]"):
        manager.get(2)


def test_a_pinned_version_waits_for_it_and_ignores_newer_ones(tmp_path, loader) -> None:
    add_version(tmp_path, 1)
    manager = manager_for(tmp_path, loader, pinned_version=2)
    manager.poll()
    with pytest.raises(Unavailable, match="pinned MODEL_VERSION=2 is not in"):
        manager.get()
    add_version(tmp_path, 2)
    add_version(tmp_path, 3)
    manager.poll()
    assert manager.get().version == 2
    assert manager.get(3).version == 3  # an explicit version is loaded on demand; the pin sets the default
    assert manager.get().version == 2


def test_versions_asked_for_by_number_are_kept_in_a_small_cache(tmp_path, loader) -> None:
    for version in range(1, 6):
        add_version(tmp_path, version)
    manager = manager_for(tmp_path, loader)
    manager.poll()
    for version in (1, 2, 1, 3, 1):
        assert manager.get(version).version == version
    assert loader.loads == [5, 1, 2, 3], "1 stays cached while it is used; 2 and 3 are loaded once"
