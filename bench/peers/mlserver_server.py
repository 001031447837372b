"""MLServer 1.7.1: a custom runtime (`MLModel`) running ONNX Runtime, PEER_WORKERS parallel inference workers.

    PEER_MODEL=model.onnx PEER_PORT=8080 PEER_WORKERS=2 python mlserver_server.py

Started as its users start it, `mlserver start`, configured through its MLSERVER_* environment
variables (no settings files). v2 JSON is MLServer's own (pydantic request, NumpyCodec); its REST
API has no v2 binary tensor extension (binary tensors only over gRPC), so the binary case is a raw
`.npy` body on a custom endpoint (MLServer's `custom_handler`), which its parallel workers answer too.
"""

import io
import os
import socket
import sys
import tempfile

import numpy as np
from fastapi import Body
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_model import OUTPUT_NAME, OnnxDigits, v2_answer

NPY_PATH = "/v2/models/mnist/infer_npy"


class Mnist(MLModel):
    async def load(self) -> bool:
        self.model = OnnxDigits(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        probabilities = self.model.predict(NumpyCodec.decode_input(payload.inputs[0]))
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output(OUTPUT_NAME, probabilities)])

    @custom_handler(rest_path=NPY_PATH)
    async def infer_npy(self, body: bytes = Body(..., media_type="application/x-npy")) -> dict:
        return v2_answer(self.model.predict(np.load(io.BytesIO(body))))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ.update({
        "MLSERVER_HOST": "127.0.0.1", "MLSERVER_HTTP_PORT": os.environ["PEER_PORT"],
        "MLSERVER_GRPC_PORT": str(free_port()), "MLSERVER_METRICS_PORT": str(free_port()),
        "MLSERVER_PARALLEL_WORKERS": os.environ.get("PEER_WORKERS", "2"), "MLSERVER_DEBUG": "false",
        # Prometheus' multiprocess files, by default in the working directory.
        "MLSERVER_METRICS_DIR": tempfile.mkdtemp(prefix="mlserver-metrics-"),
        "MLSERVER_MODEL_NAME": "mnist", "MLSERVER_MODEL_IMPLEMENTATION": "mlserver_server.Mnist",
        "MLSERVER_MODEL_URI": os.environ["PEER_MODEL"],
    })
    # `mlserver start FOLDER` puts FOLDER on sys.path (this module is the runtime) and finds no
    # model-settings.json there, so it loads the model the MLSERVER_MODEL_* variables describe.
    mlserver = os.path.join(os.path.dirname(sys.executable), "mlserver")
    os.execv(mlserver, [mlserver, "start", here])
