"""The benchmark's request bodies decode, with our own server's codecs, to the digits they were built from.

A body the server reads differently from what the benchmark meant (a wrong header length, a shape, a boundary)
would time errors or the wrong work; bench/lib/bodies.py builds every format the bench parts post.
"""

from __future__ import annotations

import io
from email.parser import BytesParser
from pathlib import Path

import numpy as np
import pytest

from bench.lib import bodies
from bench.lib.wrk import figures
from server.protocols import native, v2

IMAGES = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("extra", [{}, {"parameters": {"binary_data_output": True}},
                                   {"outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}]}])
def test_v2_bodies_decode_to_the_same_pixels(extra: dict) -> None:
    data, header_length = bodies.v2_binary(IMAGES, **extra)
    assert np.array_equal(v2.decode(data, str(header_length), 16).pixels, IMAGES)
    assert np.array_equal(v2.decode(bodies.v2_json(IMAGES, **extra), None, 16).pixels, IMAGES)


def test_native_bodies_decode_to_the_same_pixels() -> None:
    assert np.array_equal(native.decode(bodies.native_json(IMAGES), "application/json", 16).pixels, IMAGES)
    assert np.array_equal(native.decode(bodies.npy(IMAGES), "application/x-npy", 16).pixels, IMAGES)


def test_the_multipart_upload_holds_one_npy_file() -> None:
    """BentoML's and LitServe's form upload in the peers' case C (our /predict takes image files there)."""
    head = f"Content-Type: multipart/form-data; boundary={bodies.BOUNDARY}\r\n\r\n".encode()
    [part] = BytesParser().parsebytes(head + bodies.multipart_npy(IMAGES)).get_payload()
    assert part.get_param("name", header="content-disposition") == "file"
    assert np.array_equal(np.load(io.BytesIO(part.get_payload(decode=True))), IMAGES)


def test_a_written_body_carries_its_extra_header_for_urllib(tmp_path: Path) -> None:
    data, header_length = bodies.v2_binary(IMAGES)
    body = bodies.write(tmp_path / "sub" / "v2.bin", data, "application/octet-stream",
                        f"{bodies.V2_HEADER}: {header_length}")
    assert body.path.read_bytes() == data
    assert body.headers() == {"Content-Type": "application/octet-stream", bodies.V2_HEADER: str(header_length)}


def test_wrk_figures_are_rates_per_second_and_errors_summed() -> None:
    raw = {"requests": 500, "duration_us": 2_000_000, "p50_us": 1500, "p99_us": 12_345, "socket_errors": 1,
           "timeouts": 2, "non_2xx": 3}
    assert figures(raw, 256) == {"requests_per_second": 250.0, "images_per_second": 64000.0, "p50_ms": 1.5,
                                 "p99_ms": 12.35, "errors": 6}
