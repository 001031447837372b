"""The one model every peer serves: the trainer's model.onnx in ONNX Runtime, 1 intra-op thread.

Imported by each peer's server script inside that peer's own virtual environment (numpy and
onnxruntime only), so every peer runs the same model the same way; only the serving differs.
Peers keep ONNX Runtime's defaults otherwise (memory arena on), as their users would.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

INPUT_NAME = "pixels"  # the v2 input name every body uses (ours: server/protocols/v2.py)
OUTPUT_NAME = "probabilities"


class OnnxDigits:
    def __init__(self, path: str | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path or os.environ["PEER_MODEL"], options,
                                            providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 28, 28) pixel values 0..255, any numeric dtype -> (N, 10) float32 probabilities."""
        x = (np.asarray(pixels, dtype=np.float32) / 255.0).reshape(-1, 28, 28, 1)
        return self.session.run(None, {self.input: x})[0]


def v2_pixels(body: dict) -> np.ndarray:
    """The pixels of a v2 JSON body, for peers that do not speak v2 themselves."""
    tensor = body["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.uint8).reshape(tensor["shape"])


def v2_answer(probabilities: np.ndarray) -> dict:
    return {"model_name": "mnist", "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32",
                                                "shape": list(probabilities.shape),
                                                "data": probabilities.ravel().tolist()}]}
