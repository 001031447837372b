"""gRPC calls through the compose stack's proxy: HAProxy's view of the gRPC pool, and a steady stream of calls.

Calls use the server's own message classes over a plain grpcio channel, with gRPC's standard retry policy
for UNAVAILABLE (what a gRPC client configures to ride over a replica going away).
"""

from __future__ import annotations

import csv
import io
import json

import grpc
import numpy as np
import requests
from helpers import CallFailed, CallStream, eventually

from server.protocols import v2_grpc_messages as pb

BACKEND = "grpc_servers"
MAX_STREAM_CALLS = 20_000
RETRY_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": pb.SERVICE}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def grpc_pool_up(stats_url: str) -> set[str]:
    """Addresses of the gRPC replicas HAProxy counts as UP."""
    text = requests.get(stats_url + "/stats;csv", timeout=5).text.removeprefix("# ")
    return {row["addr"] for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == BACKEND and row["svname"].startswith("gsrv") and row["status"].startswith("UP")}


def wait_pool(stats_url: str, replicas: int, timeout: float = 60) -> set[str]:
    """Until HAProxy counts exactly `replicas` gRPC replicas UP; their addresses."""
    eventually(lambda: len(grpc_pool_up(stats_url)) == replicas, f"HAProxy: {replicas} gRPC replicas up", timeout,
               interval=0.5, detail=lambda: f"up: {sorted(grpc_pool_up(stats_url))}")
    return grpc_pool_up(stats_url)


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.enable_retries", 1), ("grpc.service_config", RETRY_CONFIG)])


def infer(opened: grpc.Channel, image: np.ndarray) -> tuple[int, str]:
    """(label, the replica that answered, from the proxy's x-served-by) for one ModelInfer call."""
    request = pb.ModelInferRequest(model_name="mnist", outputs=[{"name": "label"}])
    request.inputs.add(name="pixels", datatype="UINT8", shape=[1, 28, 28])
    request.raw_input_contents.append(np.ascontiguousarray(image, np.uint8).tobytes())
    stub = opened.unary_unary(f"/{pb.SERVICE}/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString,
                              response_deserializer=pb.ModelInferResponse.FromString)
    response, call = stub.with_call(request, timeout=15, wait_for_ready=True)
    served_by = dict(call.initial_metadata()).get("x-served-by", "")
    return int(np.frombuffer(response.raw_output_contents[0], "<i8")[0]), served_by


class GrpcStream(CallStream[str]):
    """One channel (one HTTP/2 connection to the proxy) calling ModelInfer from a thread until finished;
    `served_by` holds the replica that answered each call."""

    def __init__(self, address: str, images: np.ndarray, pause: float = 0.02) -> None:
        self.images = images
        self.opened = channel(address)
        super().__init__(self._infer, pause, MAX_STREAM_CALLS)

    @property
    def served_by(self) -> list[str]:
        return self.results

    def _infer(self, count: int) -> str:
        try:
            return infer(self.opened, self.images[count % len(self.images)])[1]
        except grpc.RpcError as error:
            raise CallFailed(f"{error.code().name}: {error.details()}") from None

    def finish(self, timeout: float = 30) -> None:
        super().finish(timeout)
        self.opened.close()
