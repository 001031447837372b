"""`grpc_health_probe` in the server image: exit 0 when grpc.health.v1.Health/Check says SERVING.

    python -m server.transports.grpc_probe [HOST:PORT] [SERVICE]     # default 127.0.0.1:$GRPC_PORT, ""

The image's Docker HEALTHCHECK for the gRPC service uses it (Kubernetes has a native `grpc` probe).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_SECONDS = 2


def check(address: str, service: str = "") -> str:
    """The serving status's name (SERVING, NOT_SERVING, ...) or the gRPC error code's."""
    with grpc.insecure_channel(address) as channel:
        try:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=TIMEOUT_SECONDS).status
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else f"127.0.0.1:{os.environ.get('GRPC_PORT', '8001')}"
    status = check(address, sys.argv[2] if len(sys.argv) > 2 else "")
    print(status)
    sys.exit(0 if status == "SERVING" else 1)


if __name__ == "__main__":
    main()
