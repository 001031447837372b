"""MNIST: download once into the shared volume, verify, load and sanity-check.

The download goes through Keras' own `get_file` (progress bar, hash check) but into a
private folder beside the cache, and only a verified file is renamed into place: a wrong
checksum, a dropped connection or a crash never leaves a half-written `mnist.npz` where
the trainer or the server would pick it up. Keras is imported only when a download is
needed, so the server (which only reads the cache) never imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from shared.image import IMAGE_SHAPE

NUM_CLASSES = 10
SPLITS = ("train", "test")
_EXPECTED_ARRAYS = {"x_train": 3, "y_train": 1, "x_test": 3, "y_test": 1}
DOWNLOAD_PREFIX = ".download-"
STALE_DOWNLOAD_SECONDS = 3600


class DatasetError(RuntimeError):
    """The dataset cannot be fetched or is not MNIST; the message names the file and the problem."""


@dataclass(frozen=True)
class Mnist:
    x_train: np.ndarray  # (N, 28, 28) uint8, 0..255
    y_train: np.ndarray  # (N,) uint8, 0..9
    x_test: np.ndarray
    y_test: np.ndarray

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return (self.x_train, self.y_train) if name == "train" else (self.x_test, self.y_test)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _as_url(location: str) -> str:
    """Accept a URL or a plain local path (which Keras' downloader reads as a file:// URL)."""
    if urlsplit(location).scheme in ("http", "https", "file", "ftp"):
        return location
    return Path(location).expanduser().resolve().as_uri()


def fetch(url: str, sha256: str, cache_path: Path) -> Path:
    """Return the path of a verified `mnist.npz` in the cache, downloading it if needed."""
    cache_path = Path(cache_path)
    if cache_path.is_file():
        if sha256_of(cache_path) == sha256:
            return cache_path
        print(f"dataset: cached {cache_path} does not match SHA-256 {sha256}; downloading again", flush=True)
        cache_path.unlink(missing_ok=True)  # out of service now, even if the new download fails
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_downloads(cache_path.parent)
    scratch = cache_path.parent / f"{DOWNLOAD_PREFIX}{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        downloaded = _download(_as_url(url), sha256, scratch, cache_path.name)
        os.replace(downloaded, cache_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return cache_path


def _remove_stale_downloads(folder: Path) -> None:
    """Delete the private folders of downloads killed mid-way.

    A live download writes its file all the time, so a folder whose newest entry has not
    changed for an hour belongs to a process that is gone.
    """
    cutoff = time.time() - STALE_DOWNLOAD_SECONDS
    for entry in folder.glob(f"{DOWNLOAD_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):  # another process may be removing it too
            if max(p.stat().st_mtime for p in [entry, *entry.iterdir()]) < cutoff:
                shutil.rmtree(entry, ignore_errors=True)


def _download(url: str, sha256: str, folder: Path, name: str) -> Path:
    from keras.utils import get_file  # heavy import, only when a download is really needed

    print(f"dataset: downloading {url}", flush=True)
    try:
        return Path(get_file(fname=name, origin=url, file_hash=sha256, cache_dir=str(folder), cache_subdir=""))
    except ValueError as error:  # get_file's checksum failure; it leaves the file it got in `folder`
        got = folder / name
        actual = f"got {sha256_of(got)}" if got.is_file() else "got another file"
        raise DatasetError(f"{url}: SHA-256 does not match {sha256}: {actual} (corrupt, truncated or other file; "
                           "if the file is right, set MNIST_SHA256 to its digest)") from error
    except Exception as error:  # get_file wraps every network failure in a bare Exception
        raise DatasetError(f"{url}: download failed ({error})") from error


def load(path: Path) -> Mnist:
    """Load `mnist.npz` and check it really holds MNIST-shaped arrays."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # np.load also reads a bare .npy array
            raise DatasetError(f"{path}: a single .npy array, expected an .npz archive of MNIST arrays")
        with loaded as archive:
            missing = sorted(set(_EXPECTED_ARRAYS) - set(archive.files))
            if missing:
                raise DatasetError(f"{path}: missing arrays {', '.join(missing)}")
            arrays = {key: archive[key] for key in _EXPECTED_ARRAYS}
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file (has the trainer downloaded the dataset yet?)") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as error:  # zlib: damaged deflate data
        raise DatasetError(f"{path}: not a readable .npz file ({error})") from None
    _check(path, arrays)
    return Mnist(**arrays)


def _check(path: Path, arrays: dict[str, np.ndarray]) -> None:
    for key, ndim in _EXPECTED_ARRAYS.items():
        array = arrays[key]
        if array.dtype != np.uint8 or array.ndim != ndim:
            raise DatasetError(
                f"{path}: {key} is {array.dtype} with shape {array.shape}, expected uint8 with {ndim} dims"
            )
    for split in SPLITS:
        images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if images.shape[1:] != IMAGE_SHAPE:
            raise DatasetError(f"{path}: x_{split} images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
        if len(images) == 0:
            raise DatasetError(f"{path}: x_{split} holds no images")
        if len(images) != len(labels):
            raise DatasetError(f"{path}: x_{split} has {len(images)} images but y_{split} has {len(labels)} labels")
        if labels.max() >= NUM_CLASSES:
            raise DatasetError(f"{path}: y_{split} holds label {labels.max()}, expected 0..9")
