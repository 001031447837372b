"""server/transports/grpc_processes.py in process: the port check and the supervisor's restart rule (fake processes)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import pytest

from server.transports import grpc_processes
from server.transports.grpc_processes import PortTaken, Supervisor, check_port_free
from shared.config import Config


def test_a_port_someone_listens_on_is_refused_and_a_free_one_passes() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortTaken, match=f"cannot listen on 127.0.0.1:{port}"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)


@dataclass
class FakeProcess:
    pid: int
    exitcode: int | None = None

    def start(self) -> None:
        pass


class FakeContext:
    def __init__(self) -> None:
        self.started: list[FakeProcess] = []

    def Process(self, **_: Any) -> FakeProcess:
        self.started.append(FakeProcess(pid=1000 + len(self.started)))
        return self.started[-1]


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch, tmp_path) -> Supervisor:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    made = Supervisor(Config.from_env({"GRPC_PROCESSES": "2"}))
    made.context = FakeContext()
    for seat in range(2):
        made.start(seat)
    return made


def test_a_process_killed_by_a_signal_is_replaced_even_at_once(supervisor: Supervisor) -> None:
    supervisor.context.started[0].exitcode = -9
    assert supervisor._replace_dead() is True
    assert [process.pid for process, _ in supervisor.processes.values()] == [1002, 1001]


def test_a_process_failing_by_itself_soon_after_its_start_stops_them_all(supervisor: Supervisor) -> None:
    supervisor.context.started[1].exitcode = 1
    assert supervisor._replace_dead() is False
    assert len(supervisor.context.started) == 2


def test_a_process_failing_after_it_served_a_while_is_replaced(supervisor: Supervisor, monkeypatch) -> None:
    supervisor.context.started[1].exitcode = 1
    monkeypatch.setattr(grpc_processes.time, "monotonic", lambda: 1e9)  # long after both started
    assert supervisor._replace_dead() is True
    assert len(supervisor.context.started) == 3
