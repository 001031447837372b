"""ModelManager in-process with stand-in models: which answers make a version unservable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from server.model_manager import ModelManager
from shared.config import Config
from shared.model_store import METADATA_FILE


class Answers:
    """A model that answers `row` for every image."""

    def __init__(self, row: list[float]) -> None:
        self.row = np.asarray(row, dtype=np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.tile(self.row, (len(batch), 1))


GOOD = [0.1] * 10
BAD = {
    "nan": [float("nan")] * 10,
    "infinite": [float("inf")] + [0.0] * 9,
    "negative": [-0.5, 1.5] + [0.0] * 8,
    "not summing to 1": [1.0] * 10,
    "wrong shape": [0.5, 0.5],
}


def _home_with_versions(tmp_path: Path, count: int) -> Path:
    for version in range(1, count + 1):
        folder = tmp_path / "mnist" / str(version)
        folder.mkdir(parents=True)
        (folder / METADATA_FILE).write_text(json.dumps({"version": version}))
    return tmp_path


@pytest.mark.parametrize("kind", list(BAD))
def test_a_model_answering_non_probabilities_is_refused_once(tmp_path: Path, kind: str) -> None:
    home = _home_with_versions(tmp_path, 2)
    loads: list[int] = []

    def loader(_backend: str, folder: Path, _threads: int) -> Answers:
        loads.append(int(folder.name))
        return Answers(BAD[kind] if folder.name == "2" else GOOD)

    manager = ModelManager(Config(home=home), loader)
    manager.poll()
    assert manager.current is not None and manager.current.version == 1
    (failure,) = manager.failures()
    assert failure["version"] == 2 and "not servable" in failure["error"]
    manager.poll()
    manager.poll()
    assert loads == [2, 1], "a failed version must not be loaded again on every poll"
