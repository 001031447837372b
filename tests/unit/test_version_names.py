"""Version folders are named with ASCII digits only (issue 23, item 4): `²` and `٣` are str.isdigit() too."""

from __future__ import annotations

from pathlib import Path

from shared.model_store import ModelStore


def test_only_ascii_digit_folders_are_versions(tmp_path: Path):
    for name in ("1", "2", "\u00b2", "\u0663", "\uff14", "07x", ".retired-\u0665"):
        (tmp_path / name).mkdir()
    store = ModelStore(tmp_path)
    assert store.versions() == [1, 2]  # '²' broke int(); '٣' (Arabic-Indic three) was read as version 3
    assert store.latest() == 2


def test_publish_numbers_past_ascii_folders_only(tmp_path: Path):
    (tmp_path / "\u0669").mkdir()  # '٩' is not version 9
    store = ModelStore(tmp_path)
    with store.staging() as staged:
        (staged / "metadata.json").write_text("{}")
    assert store.publish(staged) == 1
