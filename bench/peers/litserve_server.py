"""LitServe 0.2.19: a LitAPI running ONNX Runtime, 2 inference workers on the CPU.

    PEER_MODEL=model.onnx PEER_PORT=8080 PEER_WORKERS=2 python litserve_server.py

LitServe has no v2 protocol: the handler reads the v2 JSON body itself, and takes binary input as
its natural upload, a multipart form with a `.npy` file.
"""

import io
import os
import sys

import litserve as ls
import numpy as np
from fastapi import Request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_model import OnnxDigits, v2_answer, v2_pixels


class Mnist(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = OnnxDigits()

    def decode_request(self, request: Request) -> np.ndarray:
        if isinstance(request, dict):
            return v2_pixels(request)
        return np.load(io.BytesIO(request["file"].file.read()))  # multipart form (starlette FormData)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.model.predict(pixels)

    def encode_response(self, probabilities: np.ndarray) -> dict:
        return v2_answer(probabilities)


if __name__ == "__main__":
    server = ls.LitServer(Mnist(), accelerator="cpu", workers_per_device=int(os.environ.get("PEER_WORKERS", "2")))
    server.run(host="127.0.0.1", port=int(os.environ["PEER_PORT"]), generate_client_file=False, log_level="warning")
