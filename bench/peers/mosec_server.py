"""Mosec 0.9.8: Rust HTTP front end and batcher, Python worker processes running ONNX Runtime.

    PEER_MODEL=model.onnx PEER_PORT=8080 PEER_WORKERS=2 PEER_BATCH=16 python mosec_server.py

One stage of PEER_WORKERS worker processes on the route /inference. PEER_BATCH > 1 turns on
Mosec's dynamic batching (up to that many requests per call, waiting at most PEER_BATCH_WAIT_MS
for them); 1 (the default) turns it off. Mosec has no v2 protocol and hands the worker only the
body's bytes (no headers), so the worker reads the v2 JSON body itself and takes binary input as
a raw `.npy` body, told apart by numpy's magic bytes. Mosec's default JSON encoder pretty-prints
(`json.dumps(indent=2)`); as its docs advise choosing the (de)serialisation, the worker uses
msgspec, the JSON library Mosec itself depends on, both ways.
"""

import io
import os
import sys
from typing import Any

import msgspec
import numpy as np
from mosec import Server, Worker
from mosec.errors import DecodingError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_model import OnnxDigits, v2_answer, v2_pixels

NPY_MAGIC = b"\x93NUMPY"


class Mnist(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.model = OnnxDigits()

    def deserialize(self, data: bytes) -> np.ndarray:
        try:
            if data.startswith(NPY_MAGIC):
                return np.load(io.BytesIO(data))
            return v2_pixels(msgspec.json.decode(data))
        except Exception as error:  # Mosec answers DecodingError with 400
            raise DecodingError(str(error)) from error

    def serialize(self, data: Any) -> bytes:
        return msgspec.json.encode(data)

    def forward(self, data: np.ndarray | list[np.ndarray]) -> dict | list[dict]:
        if self.max_batch_size == 1:
            return v2_answer(self.model.predict(data))
        # Dynamic batching: one call for the requests Mosec gathered, then each its own rows back.
        probabilities = self.model.predict(np.concatenate([pixels.reshape(-1, 28, 28) for pixels in data]))
        ends = np.cumsum([len(pixels) for pixels in data])[:-1]
        return [v2_answer(rows) for rows in np.split(probabilities, ends)]


if __name__ == "__main__":
    # Mosec reads its settings from the command line. Its request timeout (3 s by default) is the others' 30 s.
    sys.argv[1:] = ["--address", "127.0.0.1", "--port", os.environ["PEER_PORT"], "--log-level", "warning",
                    "--timeout", "30000"]
    batch = int(os.environ.get("PEER_BATCH", "1"))
    server = Server()
    server.append_worker(Mnist, num=int(os.environ.get("PEER_WORKERS", "2")), max_batch_size=batch,
                         max_wait_time=int(os.environ.get("PEER_BATCH_WAIT_MS", "1")) if batch > 1 else 0)
    server.run()
