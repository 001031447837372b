"""A real gRPC server process (`python -m server.transports.grpc_server`) on 127.0.0.1, for tests and tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
from conftest import ROOT, LiveServer, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import eventually


class GrpcProcess(LiveServer):
    """`log()` and `stop()` are LiveServer's; it starts and checks another process."""

    def __init__(self, home: Path, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "MNIST_HOME": str(home), "GRPC_PORT": str(self.port), "BIND_HOST": "127.0.0.1",
                    "RELOAD_INTERVAL": "0.5", "GRPC_METRICS_PORT": str(free_port()), **env}
        self.env = full_env
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the process it captures
        self.process = subprocess.Popen([sys.executable, "-m", "server.transports.grpc_server"], cwd=ROOT,
                                        env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_serving(self, timeout: float = 60) -> None:
        """Until the standard health service says SERVING (a model is loaded); fails at once if the process ends."""
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                if self.process.poll() is not None:
                    raise RuntimeError(f"gRPC server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                        health_pb2.HealthCheckResponse.SERVING
                except grpc.RpcError:
                    return False  # not listening yet

            eventually(serving, f"SERVING from the gRPC health service at {self.address}", timeout, interval=0.2,
                       detail=self.log)
