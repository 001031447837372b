"""bench/empty_servers.py: the floors answer what the grpc part's checks expect."""

from __future__ import annotations

import asyncio

from werkzeug.test import Client

from bench import empty_servers
from server.protocols import v2_grpc_messages as pb


def test_the_wsgi_floor_reads_the_body_and_answers_json() -> None:
    response = Client(empty_servers.app).post("/predict", data=b'{"instances": [[0]]}')
    assert response.status_code == 200
    assert response.get_json() == {"model_version": 1, "predictions": []}


def test_the_grpc_floor_answers_a_model_infer_response_whatever_it_is_sent() -> None:
    answer = asyncio.run(empty_servers._answer(b"\x00garbage", None))
    assert pb.ModelInferResponse.FromString(answer).model_name == "mnist"


def test_the_grpc_floor_is_ready_as_the_benchmark_asks_every_server() -> None:
    answer = asyncio.run(empty_servers._ready(b"", None))
    assert pb.ModelReadyResponse.FromString(answer).ready
