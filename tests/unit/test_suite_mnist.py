"""How the suite gets MNIST on a fresh clone (tests/conftest.py resolve_mnist): with MNIST_NPZ unset it fetches
MNIST_URL into the user's cache with the trainer's download code, here from the loopback HTTP server."""

from __future__ import annotations

import pytest
from conftest import KERAS_MNIST_SHA256, KNOWN_MNIST_SHA256, SHARED_MNIST_SHA256, resolve_mnist


def test_without_mnist_npz_the_url_is_fetched_once_into_the_user_cache(mnist_http, tmp_path) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path), "MNIST_URL": mnist_http.url(), "MNIST_SHA256": SHARED_MNIST_SHA256}
    before = len(mnist_http.requests)
    path, digest = resolve_mnist(environ)
    assert path == tmp_path / "mnist-stack" / "mnist.npz" and digest == SHARED_MNIST_SHA256
    assert path.read_bytes() == mnist_http.path().read_bytes()
    assert mnist_http.requests[before:] == ["/mnist.npz"]
    # The next session finds it in the cache, with or without MNIST_SHA256: no second download.
    assert resolve_mnist(environ) == (path, digest)
    assert resolve_mnist({"XDG_CACHE_HOME": str(tmp_path)}) == (path, digest)
    assert mnist_http.requests[before:] == ["/mnist.npz"]


def test_a_download_failing_its_checksum_says_what_to_set(mnist_http, tmp_path) -> None:
    environ = {"XDG_CACHE_HOME": str(tmp_path), "MNIST_URL": mnist_http.url("truncated.npz")}
    with pytest.raises(pytest.UsageError, match=f"SHA-256 does not match {KERAS_MNIST_SHA256}: got .*MNIST_NPZ"):
        resolve_mnist(environ)
    assert not (tmp_path / "mnist-stack" / "mnist.npz").exists()


def test_mnist_npz_takes_any_known_good_file_and_names_both_digests_otherwise(mnist_http, tmp_path) -> None:
    assert SHARED_MNIST_SHA256 in KNOWN_MNIST_SHA256 and KERAS_MNIST_SHA256 in KNOWN_MNIST_SHA256
    good = mnist_http.path()
    assert resolve_mnist({"MNIST_NPZ": str(good)}) == (good.resolve(), SHARED_MNIST_SHA256)
    with pytest.raises(pytest.UsageError, match=r"SHA-256 [0-9a-f]{64} is none of the known good"):
        resolve_mnist({"MNIST_NPZ": str(mnist_http.path("corrupt.npz"))})
    with pytest.raises(pytest.UsageError, match="no such file"):
        resolve_mnist({"MNIST_NPZ": str(tmp_path / "missing.npz")})
