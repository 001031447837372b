"""PyTriton 0.7: Triton's C++ HTTP front end (v2 JSON and binary) in front of Python callables.

    PEER_MODEL=model.onnx PEER_PORT=8080 PEER_WORKERS=2 python pytriton_server.py
    PEER_GRPC_PORT=8001 ...   # Triton's gRPC front end (GRPCInferenceService) on that port, for bench/parts/grpc.py

Two model instances (one ONNX Runtime session each) and Triton's dynamic batching.
"""

import os
import socket
import sys
import sysconfig

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_model import INPUT_NAME, OUTPUT_NAME, OnnxDigits

MAX_BATCH = 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def infer_function(model: OnnxDigits):
    @batch
    def infer(**inputs: np.ndarray) -> dict:
        return {OUTPUT_NAME: model.predict(inputs[INPUT_NAME])}

    return infer


if __name__ == "__main__":
    # Triton's Python-backend stub links libpython3.x: it must be this interpreter's (pyenv), not the system's,
    # or the stdlib it loads does not match the C modules (RLock._recursion_count missing in Debian's 3.11.2).
    os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [sysconfig.get_config_var("LIBDIR"),
                                                           os.environ.get("LD_LIBRARY_PATH")]))
    instances = [OnnxDigits() for _ in range(int(os.environ.get("PEER_WORKERS", "2")))]
    grpc_port = int(os.environ.get("PEER_GRPC_PORT") or free_port())
    config = TritonConfig(http_address="127.0.0.1", http_port=int(os.environ["PEER_PORT"]), grpc_port=grpc_port,
                          metrics_port=free_port(), log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(model_name="mnist", infer_func=[infer_function(model) for model in instances],
                    inputs=[Tensor(name=INPUT_NAME, dtype=np.uint8, shape=(28, 28))],
                    outputs=[Tensor(name=OUTPUT_NAME, dtype=np.float32, shape=(10,))],
                    config=ModelConfig(max_batch_size=MAX_BATCH, batcher=DynamicBatcher()), strict=False)
        triton.serve()
