"""The model store: the contract between the trainer (writer) and the server (reader).

Layout, after TensorFlow Serving: one base directory per model holding numbered version
folders; the highest number is the current model.

    <home>/mnist/
        1/  model.keras  model.onnx  metadata.json
        2/  ...
        .staging-<id>/   a publish in progress (never read by the server)
        .retired-2/      a version taken out of service by `rollback` (the newest few kept for inspection)

A version folder only ever appears through one `rename()` of a complete, fsynced staging
folder on the same filesystem, so a reader never sees a half-written version, a crash
leaves at most a staging folder behind, and two publishers racing for the same number
both succeed with distinct numbers (renaming onto an existing non-empty folder fails).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

KERAS_FILE = "model.keras"
ONNX_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
STAGING_PREFIX = ".staging-"
RETIRED_PREFIX = ".retired-"
DELETING_PREFIX = ".deleting-"
STALE_STAGING_SECONDS = 6 * 3600


class ModelStoreError(RuntimeError):
    """The store cannot do what was asked; the message says why."""


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` so a rename publishes durable bytes."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """Numbered model versions under `base_path`; newest wins."""

    def __init__(self, base_path: Path) -> None:
        self.base_path = Path(base_path)

    def _numbered(self, prefix: str = "") -> list[int]:
        if not self.base_path.is_dir():
            return []
        found = []
        for entry in self.base_path.iterdir():
            name = entry.name
            number = name[len(prefix):]
            # ASCII digits only: '²' and '٣' pass str.isdigit(), and int() fails on one and reads 3 from the other.
            if name.startswith(prefix) and number.isascii() and number.isdigit() and entry.is_dir():
                found.append(int(number))
        return sorted(found)

    def versions(self) -> list[int]:
        """Published versions in service, oldest first."""
        return self._numbered()

    def latest(self) -> int | None:
        versions = self.versions()
        return versions[-1] if versions else None

    def version_dir(self, version: int) -> Path:
        return self.base_path / str(version)

    def has_version(self, version: int) -> bool:
        try:
            return self.version_dir(version).is_dir()
        except OSError:  # e.g. a requested version of hundreds of digits: a name too long to exist
            return False

    def metadata(self, version: int) -> dict[str, Any]:
        path = self.version_dir(version) / METADATA_FILE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise ModelStoreError(f"{path}: no such model version") from None
        except (OSError, ValueError) as error:
            raise ModelStoreError(f"{path}: unreadable metadata ({error})") from None

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder on the store's filesystem to write a version into.

        It is removed when the block raises; `publish()` moves it into place.
        """
        self.base_path.mkdir(parents=True, exist_ok=True)
        path = self.base_path / f"{STAGING_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        try:
            yield path
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise

    def publish(self, staged: Path, stamp: Callable[[Path, int], None] | None = None) -> int:
        """Atomically turn a complete staging folder into the next version number.

        `stamp(staged, version)` runs before each attempt, so files that record the version
        number (metadata.json) are right even when a concurrent publisher takes a number first.
        """
        every_number = self._numbered() + self._numbered(RETIRED_PREFIX)
        version = max(every_number, default=0) + 1
        while True:
            if stamp is not None:
                stamp(staged, version)
            _fsync_tree(staged)
            try:
                os.rename(staged, self.version_dir(version))
            except OSError as error:
                if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    version += 1  # another publisher took this number first
                    continue
                raise
            _fsync_dir(self.base_path)
            return version

    def prune(self, keep: int) -> list[int]:
        """Delete all but the newest `keep` versions; returns the deleted numbers."""
        doomed = self.versions()[:-keep] if keep > 0 else []
        return [version for version in doomed if self._delete(self.version_dir(version))]

    def prune_retired(self, keep: int) -> list[int]:
        """Delete all but the newest `keep` rolled-back folders; returns their numbers.

        The newest one always stays (keep >= 1), so `publish` never hands out a retired number again.
        """
        doomed = self._numbered(RETIRED_PREFIX)[:-max(keep, 1)]
        return [number for number in doomed if self._delete(self.base_path / f"{RETIRED_PREFIX}{number}")]

    def rollback(self) -> int:
        """Take the newest version out of service; returns the version that is current now."""
        versions = self.versions()
        if len(versions) < 2:
            raise ModelStoreError(f"{self.base_path}: nothing to roll back to (versions: {versions or 'none'})")
        newest = versions[-1]
        retired = self.base_path / f"{RETIRED_PREFIX}{newest}"
        if retired.exists():
            self._delete(retired)
        os.rename(self.version_dir(newest), retired)
        _fsync_dir(self.base_path)
        return versions[-2]

    def clean_stale_staging(self, older_than_s: float = STALE_STAGING_SECONDS) -> list[Path]:
        """Remove staging folders left by crashed publishers (only old ones: a live one may be writing)."""
        if not self.base_path.is_dir():
            return []
        cutoff = time.time() - older_than_s
        removed = []
        for entry in self.base_path.iterdir():
            if not entry.name.startswith((STAGING_PREFIX, DELETING_PREFIX)):
                continue
            try:
                is_stale = entry.stat().st_mtime < cutoff
            except FileNotFoundError:  # its publisher (or another cleaner) just moved it
                continue
            if is_stale:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def _delete(self, path: Path) -> bool:
        """Delete a version folder; False when it is already gone (a concurrent trainer pruned it)."""
        # Renamed away first, so no reader ever sees a half-deleted version folder.
        doomed = self.base_path / f"{DELETING_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return False
        shutil.rmtree(doomed, ignore_errors=True)
        return True
