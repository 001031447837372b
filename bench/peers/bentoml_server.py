"""BentoML 1.4.40: a service running ONNX Runtime, 2 workers.

    cd bench/peers && PEER_MODEL=model.onnx PEER_WORKERS=2 bentoml serve bentoml_server:Mnist --port 8080

BentoML maps a JSON body's fields onto the API's parameters, so the v2 JSON body arrives as
`inputs` (and `outputs`); binary input is its natural file upload, a multipart `.npy` file.
"""

import os
import sys
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_model import OnnxDigits, v2_answer, v2_pixels


@bentoml.service(workers=int(os.environ.get("PEER_WORKERS", "2")), traffic={"timeout": 30})
class Mnist:
    def __init__(self) -> None:
        self.model = OnnxDigits()

    @bentoml.api
    def infer(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None) -> dict:
        return v2_answer(self.model.predict(v2_pixels({"inputs": inputs})))

    @bentoml.api
    def infer_npy(self, file: Path) -> dict:
        return v2_answer(self.model.predict(np.load(file)))
