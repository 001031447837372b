"""The floors under our two transports: servers that answer every call at once and do nothing else.

    GRPC_PORT=<port> python -m bench.empty_servers             # grpc.aio: ModelInfer answers a fixed message
    gunicorn -k gevent -w 1 bench.empty_servers:app           # WSGI under gevent: reads the body, answers JSON

One process each, no model, no codec, no log: what a call costs grpcio's asyncio server, or gunicorn's gevent
worker, by itself. bench/parts/grpc.py measures both beside our servers, so the gap between our gRPC and
HTTP figures can be read against the gap between their floors.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from server.protocols import v2_grpc_messages as pb

ANSWER = pb.ModelInferResponse(model_name="mnist", model_version="1").SerializeToString()
JSON_ANSWER = b'{"model_version":1,"predictions":[]}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(JSON_ANSWER)))])
    return [JSON_ANSWER]


READY = pb.ModelReadyResponse(ready=True).SerializeToString()  # what the benchmark waits for, as from every server


async def _answer(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return ANSWER


async def _ready(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    return READY


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handlers = {name: grpc.unary_unary_rpc_method_handler(answer, request_deserializer=None, response_serializer=None)
                for name, answer in (("ModelInfer", _answer), ("ModelReady", _ready))}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(pb.SERVICE, handlers),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(os.environ["GRPC_PORT"])))
