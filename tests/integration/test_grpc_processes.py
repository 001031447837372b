"""GRPC_PROCESSES: several gRPC server processes on one port under one supervisor (server/transports/grpc_processes.py).

Real processes on 127.0.0.1 with the trained model: every process listens on the port, a second server on a
taken port refuses to start, a killed process is replaced and calls keep being answered.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import requests
from grpc_process import GrpcProcess
from helpers import eventually

from server.protocols import v2_grpc_messages as pb

PROCESSES = 2


def serving_children(process: GrpcProcess) -> dict[int, int]:
    """pid -> listening sockets on the gRPC port, for each of the supervisor's children that has one."""
    found = {}
    for child in psutil.Process(process.process.pid).children():
        listening = [c for c in child.connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == process.port]
        if listening:
            found[child.pid] = len(listening)
    return found


def infer_once(address: str) -> str:
    """One ModelInfer call on a connection of its own (a new connection may reach any process): its model version."""
    request = pb.ModelInferRequest(model_name="mnist")
    request.inputs.add(name="pixels", datatype="UINT8", shape=[1, 28, 28])
    request.raw_input_contents.append(np.zeros(784, np.uint8).tobytes())
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        infer = channel.unary_unary(f"/{pb.SERVICE}/ModelInfer",
                                    request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        return infer(request, timeout=10).model_version


@pytest.fixture
def server(trained_home: Path, tmp_path: Path) -> Iterator[GrpcProcess]:
    process = GrpcProcess(trained_home, tmp_path / "grpc.log", GRPC_PROCESSES=str(PROCESSES))
    try:
        process.wait_serving()
        eventually(lambda: len(serving_children(process)) == PROCESSES, f"{PROCESSES} processes listening",
                   timeout=60, interval=0.2, detail=process.log)
        yield process
    finally:
        process.stop()


def test_every_process_listens_and_one_metrics_port_counts_them_all(server: GrpcProcess) -> None:
    for _ in range(12):
        assert infer_once(server.address) == "1"
    metrics = requests.get(f"http://127.0.0.1:{server.env['GRPC_METRICS_PORT']}/metrics", timeout=5).text
    ok = f'mnist_requests_total{{method="POST",protocol="grpc",route="/{pb.SERVICE}/ModelInfer",status="OK"}} 12.0'
    assert ok in metrics, [line for line in metrics.splitlines() if line.startswith("mnist_requests_total")]
    answered_by = {line.split("[", 1)[1].split("]", 1)[0] for line in server.log().splitlines()
                   if "ModelInfer OK" in line}
    assert answered_by <= {str(pid) for pid in serving_children(server)}, answered_by


@pytest.mark.parametrize("processes", [PROCESSES, 1])
def test_a_second_server_on_the_taken_port_refuses_to_start(server: GrpcProcess, tmp_path: Path,
                                                             processes: int) -> None:
    clash = GrpcProcess(Path(server.env["MNIST_HOME"]), tmp_path / "clash.log", GRPC_PROCESSES=str(processes),
                        GRPC_PORT=str(server.port))
    assert clash.process.wait(60) == 1, clash.log()
    assert f"cannot listen on 127.0.0.1:{server.port}: Address already in use" in clash.log()
    assert "Traceback" not in clash.log()
    clash.stop()
    assert infer_once(server.address) == "1"  # the first server still answers


def test_a_killed_process_is_replaced(server: GrpcProcess) -> None:
    victim = next(iter(serving_children(server)))
    os.kill(victim, signal.SIGKILL)
    eventually(lambda: victim not in serving_children(server) and len(serving_children(server)) == PROCESSES,
               "a new process in the killed one's place", timeout=60, interval=0.2, detail=server.log)
    for _ in range(8):
        assert infer_once(server.address) == "1"
    assert "starting another" in server.log()


def test_sigterm_reaches_every_process_and_they_drain(server: GrpcProcess) -> None:
    children = list(serving_children(server))
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0, server.log()
    assert server.log().count("draining: up to") == PROCESSES
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in children)


def test_one_process_serves_alone_without_a_supervisor(trained_home: Path, tmp_path: Path) -> None:
    single = GrpcProcess(trained_home, tmp_path / "single.log", GRPC_PROCESSES="1")
    try:
        single.wait_serving()
        assert infer_once(single.address) == "1"
        assert not psutil.Process(single.process.pid).children(), "GRPC_PROCESSES=1 started other processes"
        assert any(c.status == psutil.CONN_LISTEN and c.laddr.port == single.port
                   for c in psutil.Process(single.process.pid).connections("tcp"))
        metrics = requests.get(f"http://127.0.0.1:{single.env['GRPC_METRICS_PORT']}/metrics", timeout=5).text
        assert f'route="/{pb.SERVICE}/ModelInfer",status="OK"}} 1.0' in metrics
        single.process.send_signal(signal.SIGTERM)
        assert single.process.wait(60) == 0, single.log()
    finally:
        single.stop()
