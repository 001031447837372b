"""The dataset through the real download code (Keras' get_file) from a loopback HTTP server."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED_MNIST, SHARED_MNIST_SHA256, free_port

from shared import dataset
from shared.dataset import DatasetError

# What the real MNIST holds (the Keras file and the mirror's copy alike).
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
Y_TRAIN_FIRST_15 = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4, 3, 5, 3, 6, 1]
X_TRAIN_SHA256 = "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757"
WRONG_SHA256 = "0" * 64


def cache_file(tmp_path: Path) -> Path:
    return tmp_path / "datasets" / "mnist.npz"


def assert_cache_dir_empty(cache: Path) -> None:
    """No verified file, no partial file and no private `.download-*` folder was left behind."""
    leftovers = sorted(p.name for p in cache.parent.iterdir()) if cache.parent.exists() else []
    assert leftovers == []


def test_download_verifies_and_caches_the_real_mnist(mnist_http, tmp_path):
    cache = cache_file(tmp_path)
    before = len(mnist_http.requests)
    path = dataset.fetch(mnist_http.url(), SHARED_MNIST_SHA256, cache)
    assert path == cache
    assert mnist_http.requests[before:] == ["/mnist.npz"]
    assert dataset.sha256_of(path) == SHARED_MNIST_SHA256
    assert sorted(p.name for p in cache.parent.iterdir()) == ["mnist.npz"]  # the scratch folder is gone

    data = dataset.load(path)
    assert data.x_train.shape == (60000, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.shape == (60000,) and data.y_train.dtype == np.uint8
    assert data.x_test.shape == (10000, 28, 28) and data.x_test.dtype == np.uint8
    assert data.y_test.shape == (10000,) and data.y_test.dtype == np.uint8
    assert np.bincount(data.y_train).tolist() == TRAIN_CLASS_COUNTS
    assert np.bincount(data.y_test).tolist() == TEST_CLASS_COUNTS
    assert data.y_train[:15].tolist() == Y_TRAIN_FIRST_15
    assert data.x_train.mean() == pytest.approx(33.318421, abs=1e-5)
    assert hashlib.sha256(data.x_train.tobytes()).hexdigest() == X_TRAIN_SHA256
    assert data.split("test")[1] is data.y_test


def test_a_cache_hit_makes_no_request(mnist_http, tmp_path):
    cache = cache_file(tmp_path)
    dataset.fetch(mnist_http.url(), SHARED_MNIST_SHA256, cache)
    before = len(mnist_http.requests)
    assert dataset.fetch(mnist_http.url(), SHARED_MNIST_SHA256, cache) == cache
    assert mnist_http.requests[before:] == []


def test_a_cached_file_with_the_wrong_hash_is_downloaded_again(mnist_http, tmp_path):
    cache = cache_file(tmp_path)
    cache.parent.mkdir()
    cache.write_bytes(b"left over from an older, different mnist.npz")
    before = len(mnist_http.requests)
    dataset.fetch(mnist_http.url(), SHARED_MNIST_SHA256, cache)
    assert mnist_http.requests[before:] == ["/mnist.npz"]
    assert dataset.sha256_of(cache) == SHARED_MNIST_SHA256


@pytest.mark.parametrize(
    ("name", "sha256"),
    [
        ("mnist.npz", WRONG_SHA256),  # the right file, but not the configured checksum
        ("truncated.npz", SHARED_MNIST_SHA256),  # the first half of the real file
        ("corrupt.npz", SHARED_MNIST_SHA256),  # the right length, zeros after the first 1000 bytes
    ],
)
def test_a_file_failing_the_checksum_is_refused_and_nothing_is_cached(mnist_http, tmp_path, name, sha256):
    cache = cache_file(tmp_path)
    url = mnist_http.url(name)
    with pytest.raises(DatasetError) as caught:
        dataset.fetch(url, sha256, cache)
    message = str(caught.value)
    assert message.startswith(f"{url}: SHA-256 does not match {sha256}: got ")
    with mnist_http.path(name).open("rb") as served:  # both digests: the expected one and the one it got
        assert f"got {hashlib.file_digest(served, 'sha256').hexdigest()}" in message
    assert "\n" not in message
    assert_cache_dir_empty(cache)


def test_a_stale_cached_file_is_removed_even_when_its_new_download_fails(mnist_http, tmp_path):
    # Whatever reads the cache (the server) must never pick up a file that failed its checksum.
    cache = cache_file(tmp_path)
    cache.parent.mkdir()
    cache.write_bytes(b"stale")
    with pytest.raises(DatasetError):
        dataset.fetch(mnist_http.url("truncated.npz"), SHARED_MNIST_SHA256, cache)
    assert_cache_dir_empty(cache)


def test_a_download_killed_long_ago_is_cleaned_up_but_a_live_one_is_not(mnist_http, tmp_path):
    cache = cache_file(tmp_path)
    cache.parent.mkdir()
    killed, live = cache.parent / ".download-killed", cache.parent / ".download-live"
    for folder in (killed, live):
        folder.mkdir()
        (folder / "mnist.npz").write_bytes(b"partial")
    two_hours_ago = time.time() - 2 * 3600
    for path in (killed, killed / "mnist.npz", live):  # the live download's file is still being written
        os.utime(path, (two_hours_ago, two_hours_ago))
    dataset.fetch(mnist_http.url(), SHARED_MNIST_SHA256, cache)
    assert sorted(p.name for p in cache.parent.iterdir()) == [".download-live", "mnist.npz"]


def test_server_down_is_a_clear_error(tmp_path):
    cache = cache_file(tmp_path)
    url = f"http://127.0.0.1:{free_port()}/mnist.npz"  # bound then closed: nothing listens, refused at once
    with pytest.raises(DatasetError) as caught:
        dataset.fetch(url, SHARED_MNIST_SHA256, cache)
    message = str(caught.value)
    assert message.startswith(f"{url}: download failed")
    assert "refused" in message.lower()
    assert_cache_dir_empty(cache)


def test_a_missing_file_on_the_server_is_a_clear_error(mnist_http, tmp_path):
    cache = cache_file(tmp_path)
    url = mnist_http.url("no-such.npz")
    with pytest.raises(DatasetError, match=r"download failed.*404"):
        dataset.fetch(url, SHARED_MNIST_SHA256, cache)
    assert_cache_dir_empty(cache)


@pytest.mark.parametrize("form", ["absolute path", "relative path", "file:// URL"])
def test_a_local_file_is_accepted(tmp_path, monkeypatch, form):
    monkeypatch.chdir(ROOT)  # the relative form is the one the README uses
    location = {
        "absolute path": str(SHARED_MNIST),
        "relative path": os.path.relpath(SHARED_MNIST, ROOT),
        "file:// URL": SHARED_MNIST.as_uri(),
    }[form]
    cache = cache_file(tmp_path)
    assert dataset.fetch(location, SHARED_MNIST_SHA256, cache) == cache
    assert dataset.sha256_of(cache) == SHARED_MNIST_SHA256
    assert SHARED_MNIST.is_file()  # the source is copied, never moved


# load(): one clear line naming the file, for anything that is not MNIST-shaped.


def good_arrays() -> dict[str, np.ndarray]:
    """A tiny but valid MNIST-shaped archive: 3 training and 2 test images."""
    return {
        "x_train": np.zeros((3, 28, 28), np.uint8),
        "y_train": np.array([0, 5, 9], np.uint8),
        "x_test": np.zeros((2, 28, 28), np.uint8),
        "y_test": np.array([1, 2], np.uint8),
    }


def test_load_accepts_a_small_valid_archive(tmp_path):
    path = tmp_path / "small.npz"
    np.savez(path, **good_arrays())
    data = dataset.load(path)
    assert data.y_train.tolist() == [0, 5, 9]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"y_test": None}, "missing arrays y_test"),
        ({"x_train": np.zeros((3, 28, 28), np.float32)}, "x_train is float32"),
        ({"y_train": np.array([0, 5, 9], np.int64)}, "y_train is int64"),
        ({"x_test": np.zeros((2, 27, 27), np.uint8)}, "x_test images are (27, 27)"),
        ({"x_train": np.zeros((3, 784), np.uint8)}, "expected uint8 with 3 dims"),
        ({"y_train": np.array([0, 10, 9], np.uint8)}, "y_train holds label 10"),
        ({"y_test": np.array([1], np.uint8)}, "x_test has 2 images but y_test has 1 labels"),
        ({"x_test": np.zeros((0, 28, 28), np.uint8), "y_test": np.zeros(0, np.uint8)}, "x_test holds no images"),
        ({"y_train": np.array(["0", "5", "9"], dtype=object)}, "not a readable .npz file"),  # pickled data
    ],
)
def test_load_names_the_file_and_the_problem(tmp_path, change, expected):
    arrays = {**good_arrays(), **change}
    path = tmp_path / "bad.npz"
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    assert_one_line_error(path, expected)


def test_load_refuses_truncated_and_damaged_files(tmp_path):
    data = SHARED_MNIST.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    assert_one_line_error(truncated, "not a readable .npz file")

    # Damage inside the compressed x_train stream: zlib (not zipfile) notices this one.
    damaged = bytearray(data)
    damaged[100:164] = b"\xff" * 64
    path = tmp_path / "damaged.npz"
    path.write_bytes(bytes(damaged))
    assert_one_line_error(path, "not a readable .npz file")


def test_load_refuses_files_that_are_no_archive(tmp_path):
    npy = tmp_path / "array.npz"
    with open(npy, "wb") as handle:
        np.save(handle, np.zeros((28, 28), np.uint8))  # np.load reads this as a bare array
    assert_one_line_error(npy, "a single .npy array")
    text = tmp_path / "text.npz"
    text.write_text("<html>mirror login page</html>")
    assert_one_line_error(text, "not a readable .npz file")
    assert_one_line_error(tmp_path / "absent.npz", "no such file")


def assert_one_line_error(path: Path, expected: str) -> None:
    with pytest.raises(DatasetError) as caught:
        dataset.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    assert "\n" not in message
