"""gRPC calls through the compose stack's proxy: HAProxy's view of the gRPC pool, and a steady stream of calls.

Calls use the server's own message classes over a plain grpcio channel, with gRPC's standard retry policy
for UNAVAILABLE (what a gRPC client configures to ride over a replica going away).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
import requests

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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        up = grpc_pool_up(stats_url)
        if len(up) == replicas:
            return up
        time.sleep(0.5)
    raise AssertionError(f"HAProxy: {replicas} gRPC replicas not up within {timeout} s ({grpc_pool_up(stats_url)})")


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


@dataclass
class GrpcStream:
    """One channel (one HTTP/2 connection to the proxy) calling ModelInfer from a thread until stopped."""

    address: str
    images: np.ndarray
    pause: float = 0.02
    served_by: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        with channel(self.address) as opened:
            for count in range(MAX_STREAM_CALLS):
                if self.stop.is_set():
                    return
                try:
                    self.served_by.append(infer(opened, self.images[count % len(self.images)])[1])
                except grpc.RpcError as error:
                    self.failures.append(f"{error.code().name}: {error.details()}")
                time.sleep(self.pause)

    def wait_for(self, more: int, timeout: float = 60) -> None:
        target, deadline = len(self.served_by) + more, time.monotonic() + timeout
        while len(self.served_by) < target and not self.failures:
            assert self.thread.is_alive(), "the stream stopped"
            assert time.monotonic() < deadline, f"{more} more answers not within {timeout} s"
            time.sleep(0.05)

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
