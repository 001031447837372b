"""Request bodies built from test digits (uint8 pixels 0..255): native JSON, .npy, the Open Inference Protocol
v2 JSON and v2 binary (what tritonclient sends by default), and a multipart .npy upload."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import TMP, bench_mnist
from bench.lib.wrk import Body

V2_HEADER = "Inference-Header-Content-Length"
BOUNDARY = "bench-peers-boundary"


def test_digits(count: int) -> np.ndarray:
    """The first `count` test digits, (count, 28, 28) uint8."""
    with np.load(bench_mnist()[0]) as archive:
        return archive["x_test"][:count]


def native_json(images: np.ndarray) -> bytes:
    """Our /predict's JSON: {"instances": [...]}."""
    return json.dumps({"instances": images.tolist()}).encode()


def npy(images: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, images)
    return buffer.getvalue()


def v2_json(images: np.ndarray, **extra: Any) -> bytes:
    """A v2 JSON request with UINT8 data; `extra` (outputs, parameters) follows the inputs."""
    tensor = {"name": "pixels", "shape": list(images.shape), "datatype": "UINT8", "data": images.ravel().tolist()}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def v2_binary(images: np.ndarray, **extra: Any) -> tuple[bytes, int]:
    """A v2 binary-tensor request (the JSON, then the raw pixels) and its JSON's length, the value of
    Inference-Header-Content-Length; `extra` (outputs, parameters) follows the inputs."""
    tensor = {"name": "pixels", "shape": list(images.shape), "datatype": "UINT8",
              "parameters": {"binary_data_size": images.nbytes}}
    header = json.dumps({"inputs": [tensor], **extra}).encode()
    return header + images.tobytes(), len(header)


def multipart_npy(images: np.ndarray, boundary: str = BOUNDARY) -> bytes:
    """A multipart/form-data upload of one .npy file named `file`."""
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{len(images)}.npy\"\r\n"
            "Content-Type: application/x-npy\r\n\r\n")
    return head.encode() + npy(images) + f"\r\n--{boundary}--\r\n".encode()


def write(path: Path, data: bytes, content_type: str, header: str = "") -> Body:
    """`data` written to `path` (its folder made), as a Body for wrk and urllib."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return Body(path, content_type, header)


def case_bodies(x_test: np.ndarray) -> dict[str, Body]:
    """The bodies of the peers' cases A, B and C (bench/parts/peers.py), from 256 test digits: v2 JSON of batch 1
    and 256 ("json-N"), v2 binary ("v2-256"), .npy ("npy-256") and a multipart .npy upload ("multipart-256").
    v2 asks for the probabilities output as JSON (binary_data false), which every server can answer."""
    folder = TMP / "peer-bodies"
    outputs = {"name": "probabilities"}
    bodies = {f"json-{size}": write(folder / f"v2-{size}.json", v2_json(x_test[:size], outputs=[outputs]),
                                    "application/json") for size in (1, 256)}
    data, header_length = v2_binary(x_test[:256], outputs=[{**outputs, "parameters": {"binary_data": False}}])
    bodies["v2-256"] = write(folder / "v2-256.bin", data, "application/octet-stream", f"{V2_HEADER}: {header_length}")
    bodies["npy-256"] = write(folder / "256.npy", npy(x_test[:256]), "application/x-npy")
    bodies["multipart-256"] = write(folder / "256.multipart", multipart_npy(x_test[:256]),
                                    f"multipart/form-data; boundary={BOUNDARY}")
    return bodies
