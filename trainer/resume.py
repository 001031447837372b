"""Resumable training: a backup of the run in progress, restored by a rerun with the same settings.

Keras' own `BackupAndRestore` callback does the work: after every epoch it saves the weights,
the optimizer state and the epoch number, and at the start of `fit` it restores them and
continues with the next epoch. This module decides where that backup lives and when one may be
resumed:

    <home>/training-backup/<fingerprint>/   next to the store (<home>/mnist/), never a version
        latest.weights.h5  training_metadata.json   Keras' files (and their .bkp twins)
        run.json       the settings behind the fingerprint, to say why an old backup is not resumed
        history.json   per-epoch metrics of the finished epochs, so a resumed run reports all epochs

The fingerprint covers everything that changes what an epoch computes: batch size, seed,
subset, precision, backend, process count, the dataset's SHA-256, the Keras version and the
trainer's model and training code. EPOCHS is left out on purpose: with a constant learning
rate the first N epochs of a longer run are the same computation, so a run killed at epoch 4 of
6 and rerun with EPOCHS=8 continues at epoch 5. A backup already past EPOCHS is not resumed
(that model has trained more than asked), nor is one with another fingerprint: both are removed.
A run that finished (published, or refused by the quality gate) removes its backup.

One trainer at a time per home: prepare() takes an exclusive lock (`<home>/training-backup.lock`,
flock, released when the process exits or clear() runs), and a second trainer in the same home
refuses to start, saying which process holds it. Without it the second run deleted the first
run's backup as "another fingerprint" while the first was still training into it, or, with the
same settings, both wrote one folder. The lock is per process, so successive runs in one
process (the tests) share it, and only the writer of a multi-process job takes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import h5py
import keras

from shared.model_store import ModelStoreError

BACKUP_FOLDER = "training-backup"
SETTINGS_FILE = "run.json"
HISTORY_FILE = "history.json"
KERAS_METADATA_FILE = "training_metadata.json"  # BackupAndRestore's names for its files
WEIGHTS_FILE = "latest.weights.h5"
LOCK_FILE = "training-backup.lock"
FINGERPRINT_LENGTH = 16
# The code whose change makes an old backup another computation (the data sharding lives in distributed.py).
TRAINING_CODE = ("model.py", "train.py", "distributed.py")
TRAINER_DIR = Path(__file__).resolve().parent


def code_sha256() -> str:
    digest = hashlib.sha256()
    for name in TRAINING_CODE:
        digest.update((TRAINER_DIR / name).read_bytes())
    return digest.hexdigest()


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:FINGERPRINT_LENGTH]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class BackupInUse(ModelStoreError):
    """Another trainer process is training in the same home (its backups and versions would be mixed)."""


_held_locks: dict[Path, int] = {}  # lock file -> open descriptor, per process


def _lock(home: Path) -> None:
    path = home / LOCK_FILE
    if path in _held_locks:
        return
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise BackupInUse(f"another trainer ({holder}) is training in {home}; a second run there would delete or"
                          " mix its backup. Wait for it to finish, or give this run its own HOME") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
    _held_locks[path] = fd


def _unlock(home: Path) -> None:
    fd = _held_locks.pop(home / LOCK_FILE, None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def _differences(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "its settings are unreadable"
    changed = [f"{key} {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(new) if old.get(key) != new.get(key)]
    return ", ".join(changed) or "its settings are the same but its fingerprint is not"


class Backup:
    """The backup folder of one run's settings under `<home>/training-backup/`."""

    def __init__(self, home: Path, settings: dict[str, Any], writer: bool = True) -> None:
        self.home = Path(home)
        self.root = self.home / BACKUP_FOLDER
        self.settings = {**settings, "keras": keras.__version__, "code_sha256": code_sha256()}
        self.folder = self.root / fingerprint(self.settings)
        self.writer = writer  # only one process of a multi-process job writes (and removes) files

    def saved_epochs(self) -> int:
        """Epochs finished according to the backup (0 when there is none)."""
        metadata = _read_json(self.folder / KERAS_METADATA_FILE)
        return int(metadata["epoch"]) if isinstance(metadata, dict) and "epoch" in metadata else 0

    def prepare(self, epochs: int) -> None:
        """Remove backups that must not be resumed, saying why, before Keras looks for this run's.

        BackupInUse when another trainer process holds this home (nothing is removed then)."""
        if self.writer:
            _lock(self.home)
        if self.root.is_dir():
            for other in sorted(self.root.iterdir()):
                if other != self.folder:
                    why = _differences(_read_json(other / SETTINGS_FILE), self.settings)
                    print(f"trainer: not resuming the backup in {other} ({why}); starting fresh", flush=True)
                    self._remove(other)
        done = self.saved_epochs()
        if (self.folder / WEIGHTS_FILE).exists() and not self._restorable():
            print(f"trainer: not resuming the backup in {self.folder}: it was cut off while being written"
                  " (the trainer was killed during a save); starting fresh", flush=True)
            self._remove(self.folder)
        elif done > epochs:
            print(f"trainer: not resuming the backup in {self.folder}: it has trained {done} epochs, more than"
                  f" EPOCHS={epochs}; starting fresh", flush=True)
            self._remove(self.folder)
        if self.writer:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / SETTINGS_FILE).write_text(json.dumps(self.settings, indent=2, sort_keys=True))

    def _restorable(self) -> bool:
        """Whether Keras can restore this backup: an epoch count and weights it can open (else their .bkp twins)."""
        if not self.saved_epochs():
            return False
        for weights in (WEIGHTS_FILE, WEIGHTS_FILE + ".bkp"):
            try:
                with h5py.File(self.folder / weights, "r"):
                    return True
            except OSError:  # missing, or truncated by a kill mid-write
                continue
        return False

    def callback(self, epochs: int, history: list[dict[str, float]]) -> keras.callbacks.Callback:
        """Keras' BackupAndRestore for this folder; `history` (the epoch timer's list) is saved and restored too."""
        return _BackupAndRestore(self, epochs, history)

    def clear(self) -> None:
        """The run is over: nothing to resume any more."""
        self._remove(self.folder)
        if self.writer:
            with contextlib.suppress(OSError):  # not empty: another run's backup is in there
                self.root.rmdir()
            _unlock(self.home)

    def _remove(self, folder: Path) -> None:
        if self.writer:
            shutil.rmtree(folder, ignore_errors=True)


class _BackupAndRestore(keras.callbacks.BackupAndRestore):
    def __init__(self, backup: Backup, epochs: int, history: list[dict[str, float]]) -> None:
        # double_checkpoint: a kill while the weights are being written leaves the previous epoch's
        # files to fall back on. delete_checkpoint=False: the backup outlives `fit` until the model is
        # published, so a run killed while exporting resumes with no epochs left to train.
        super().__init__(str(backup.folder), save_freq="epoch", double_checkpoint=True, delete_checkpoint=False)
        self.backup = backup
        self.epochs = epochs
        self.history = history

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)  # restores weights, optimizer state and the epoch to start from
        done = self.backup.saved_epochs()
        if not done:
            return
        saved = _read_json(self.backup.folder / HISTORY_FILE)
        self.history[:] = [entry for entry in (saved or []) if entry.get("epoch", 0) <= done]
        if done < self.epochs:
            print(f"trainer: resuming from epoch {done + 1} of {self.epochs} (backup in {self.backup.folder})",
                  flush=True)
        else:
            print(f"trainer: the backup in {self.backup.folder} has finished all {self.epochs} epochs;"
                  " evaluating and publishing it", flush=True)

    def _save_model(self) -> None:
        if self.backup.writer:
            super()._save_model()
            (self.backup.folder / HISTORY_FILE).write_text(json.dumps(self.history))
            return
        # In a multi-process job, reading the replicated weights is itself a collective: every process
        # must save when the writer does (measured: a save by process 0 alone fails the next step).
        with tempfile.TemporaryDirectory(prefix="replica-backup-") as scratch:
            self.model.save_weights(str(Path(scratch) / "replica.weights.h5"))
