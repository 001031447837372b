"""KServe's Python model server (kserve 0.21) with a custom `kserve.Model` running ONNX Runtime.

    PEER_MODEL=model.onnx PEER_PORT=8080 PEER_WORKERS=2 python kserve_server.py

v2 JSON and the v2 binary tensor extension come from KServe itself; 2 uvicorn worker processes.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from onnx_model import OUTPUT_NAME, OnnxDigits


class Mnist(Model):
    def __init__(self) -> None:
        super().__init__("mnist")
        self.model = None
        self.load()

    def load(self) -> bool:
        self.model = OnnxDigits()
        self.ready = True
        return self.ready

    # With workers > 1 KServe starts each uvicorn worker by spawn and pickles the model into it: an
    # ONNX Runtime session cannot be pickled, so each worker loads its own.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "model": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        probabilities = self.model.predict(payload.inputs[0].as_numpy())
        output = InferOutput(name=OUTPUT_NAME, shape=list(probabilities.shape), datatype="FP32")
        output.set_data_from_numpy(probabilities, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id or "")


if __name__ == "__main__":
    # PEER_GRPC_PORT: KServe's gRPC server (the Open Inference Protocol's) as well, for bench/parts/grpc.py.
    grpc_port = os.environ.get("PEER_GRPC_PORT")
    ModelServer(http_port=int(os.environ["PEER_PORT"]), workers=int(os.environ.get("PEER_WORKERS", "2")),
                enable_grpc=grpc_port is not None, grpc_port=int(grpc_port or 8081)).start([Mnist()])
