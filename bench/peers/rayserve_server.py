"""Ray Serve 2.60: a deployment running ONNX Runtime, 2 replicas, behind Serve's HTTP proxy.

    PEER_MODEL=model.onnx PEER_PORT=8080 PEER_WORKERS=2 python rayserve_server.py

Ray Serve has no v2 protocol: the handler reads the v2 JSON body itself, binary input as a raw
`.npy` body (Content-Type application/x-npy).
"""

import io
import json
import os
import sys
import time

import numpy as np
import ray
from ray import serve
from starlette.requests import Request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from onnx_model import OnnxDigits, v2_answer, v2_pixels

WORKERS = int(os.environ.get("PEER_WORKERS", "2"))


@serve.deployment(num_replicas=WORKERS, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=16)
class Mnist:
    def __init__(self) -> None:
        self.model = OnnxDigits()

    async def __call__(self, request: Request) -> dict:
        body = await request.body()
        if request.headers.get("content-type") == "application/x-npy":
            pixels = np.load(io.BytesIO(body))
        else:
            pixels = v2_pixels(json.loads(body))
        return v2_answer(self.model.predict(pixels))


if __name__ == "__main__":
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PEER_MODEL": os.environ["PEER_MODEL"]}})
    serve.start(http_options={"host": "127.0.0.1", "port": int(os.environ["PEER_PORT"])})
    serve.run(Mnist.bind(), name="mnist", route_prefix="/infer")
    while True:  # Serve runs in Ray's processes; this driver keeps them alive until it is stopped
        time.sleep(3600)
