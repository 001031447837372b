"""Several gRPC server processes on one port, as gunicorn's workers share theirs.

    GRPC_PROCESSES=2 python -m server.transports.grpc_server     # what compose and Kubernetes run

One process's event loop answers every call it gets (server/transports/grpc_server.py), so one process
uses about one core at most; several use several (bench/results.md, "gRPC"). The kernel spreads new
connections over the processes' listening sockets (SO_REUSEPORT); each process has its own model, hot
reload, health service and batcher. This supervisor starts them, answers /metrics on GRPC_METRICS_PORT
for all of them (prometheus_client's multiprocess mode, as gunicorn's workers), passes SIGTERM and
SIGINT on (each process drains for REQUEST_TIMEOUT) and replaces a process that dies. A process that
fails by itself within EARLY_EXIT_SECONDS of its start (a bad setting, a taken port: an exit status
above 0, not a signal) stops them all: a restart would fail the same way, and the orchestrator should
see it.

SO_REUSEPORT would also let an unrelated second server share the port without a word, so the
supervisor first binds the port plainly and refuses to start while anything listens there.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from server import metrics_dir
from shared import logs
from shared.config import Config

log = logging.getLogger(__name__)
EARLY_EXIT_SECONDS = 10.0
POLL_SECONDS = 0.2
PARENT_POLL_SECONDS = 1.0
KILL_AFTER_DRAIN_SECONDS = 5.0


class PortTaken(SystemExit):
    """Something already listens on GRPC_PORT."""


def check_port_free(host: str, port: int) -> None:
    """Raise PortTaken when a listening socket holds `host:port` (a plain bind, no SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As grpcio binds: a closed connection's TIME_WAIT does not hold the port, a listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortTaken(f"grpc server: cannot listen on {host}:{port}: {error.strerror}") from None


def serve_one() -> None:
    """One of the processes (a spawned interpreter): the gRPC server on the shared port, no /metrics of its own."""
    from server import tracing
    from server.transports.grpc_server import SERVICE_NAME, serve

    config = Config.from_env()
    logs.configure(config.log_format)
    tracing.setup(SERVICE_NAME)
    _follow_parent(os.getppid())
    asyncio.run(serve(config, reuse_port=True, expose_metrics=False))


def _follow_parent(parent: int) -> None:
    """Drain and exit when the supervisor is gone (killed without passing a signal on)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()


class Supervisor:
    """Starts GRPC_PROCESSES processes, keeps them running until told to stop, then lets them drain."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: grpcio is not fork-safe
        self.processes: dict[int, tuple[BaseProcess, float]] = {}  # seat -> (process, when it started)
        self.stopping = threading.Event()

    def start(self, seat: int) -> None:
        process = self.context.Process(target=serve_one, name=f"grpc-{seat}")
        process.start()
        self.processes[seat] = (process, time.monotonic())

    def run(self) -> int:
        """Until SIGTERM or SIGINT (then 0), or until a process ends soon after its start (then 1)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        for seat in range(self.config.grpc_processes):
            self.start(seat)
        _expose_metrics(self.config)
        log.info("gRPC GRPCInferenceService in %d processes on port %d, /metrics on %d",
                 self.config.grpc_processes, self.config.grpc_port, self.config.grpc_metrics_port)
        status = 0
        while not self.stopping.wait(POLL_SECONDS):
            if not self._replace_dead():
                status = 1
                break
        self._drain()
        return status

    def _stop(self, signum: int, _frame: Any) -> None:
        log.info("%s: passing it on to the gRPC processes", signal.Signals(signum).name)
        self.stopping.set()

    def _replace_dead(self) -> bool:
        """Start a new process in each dead one's seat; False when one ended too soon to be worth a restart."""
        from prometheus_client import multiprocess

        for seat, (process, started) in list(self.processes.items()):
            if process.exitcode is None:
                continue
            multiprocess.mark_process_dead(process.pid)  # drop its live gauges
            lived = time.monotonic() - started
            if lived < EARLY_EXIT_SECONDS and process.exitcode > 0:  # its own failure, not a kill
                log.error("gRPC process %s ended with %s %.1f s after its start: stopping", process.pid,
                          process.exitcode, lived)
                return False
            log.warning("gRPC process %s ended with %s: starting another", process.pid, process.exitcode)
            self.start(seat)
        return True

    def _drain(self) -> None:
        """SIGTERM to each process still running; REQUEST_TIMEOUT (and a margin) to drain, then SIGKILL."""
        alive = [process for process, _ in self.processes.values() if process.exitcode is None]
        for process in alive:
            process.terminate()
        deadline = time.monotonic() + self.config.request_timeout + KILL_AFTER_DRAIN_SECONDS
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("gRPC process %s still running after its drain: killing it", process.pid)
                process.kill()
                process.join()


def _expose_metrics(config: Config) -> None:
    """/metrics on GRPC_METRICS_PORT, adding up every process's samples."""
    from prometheus_client import start_http_server

    from server.metrics import multiprocess_registry

    start_http_server(config.grpc_metrics_port, addr=config.bind_host, registry=multiprocess_registry())


def supervise(config: Config) -> int:
    """Run GRPC_PROCESSES processes on GRPC_PORT until SIGTERM or SIGINT; the exit status."""
    folder, own = metrics_dir.prepare("mnist-grpc-metrics-")  # before any process imports prometheus_client
    try:
        return Supervisor(config).run()
    finally:
        metrics_dir.remove(folder, own)
