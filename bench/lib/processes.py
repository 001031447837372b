"""Server processes under test: a free port, start and wait for readiness, stop the whole tree, and the
figures read from them with psutil (RSS, PSS, CPU seconds, workers)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import ROOT, TMP
from bench.lib.wrk import Body

READY_TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Launch:
    """How to start one server and know it is ready: a 200 on `ready_path` (holding `ready_contains`)."""

    name: str
    command: list[str]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = ROOT
    ready_contains: str = ""  # when the readiness route answers 200 before the model is deployed
    log_name: str = ""  # TMP/<log_name>.log; default the name
    # POSTed to ready_path instead of a GET, for a server whose only route that waits for the model
    # is inference itself (Mosec's GET / answers 200 before any worker has loaded it).
    ready_body: Body | None = None


class Running:
    """A started server: its URL, process, log, and seconds from process start to ready."""

    def __init__(self, launch: Launch, port: int, timeout: float = READY_TIMEOUT) -> None:
        self.launch = launch
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(TMP / f"{(launch.log_name or launch.name).replace(' ', '_')}.log", "wb")  # noqa: SIM115
        started = time.perf_counter()
        self.process = subprocess.Popen(launch.command, cwd=launch.cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **launch.env}, start_new_session=True)
        atexit.register(self.stop)  # a run that fails midway must not leave a server behind on the shared cores
        self.ready_seconds = round(self._wait_ready(started, timeout), 2)

    def _wait_ready(self, started: float, timeout: float) -> float:
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.launch.name} exited with {self.process.returncode}; see {self.log.name}")
            try:
                if self.launch.ready_body is not None:
                    self.request(self.launch.ready_path, self.launch.ready_body, timeout=1)
                    return time.perf_counter() - started
                with urllib.request.urlopen(self.url + self.launch.ready_path, timeout=1) as answer:
                    if answer.status == 200 and self.launch.ready_contains in answer.read().decode(errors="replace"):
                        return time.perf_counter() - started
            except OSError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.launch.name} not ready after {timeout} s; see {self.log.name}")

    def request(self, path: str, body: Body, timeout: float = 60) -> tuple[bytes, Any]:
        """POST `body` to `path`: the answer's bytes and headers (a non-2xx raises)."""
        request = urllib.request.Request(self.url + path, data=body.path.read_bytes(), headers=body.headers())
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.read(), answer.headers

    def post(self, path: str, body: Body) -> dict[str, Any]:
        return json.loads(self.request(path, body)[0])

    def tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def workers(self) -> list[psutil.Process]:
        return children(self.process.pid)

    def stop(self) -> None:
        """SIGTERM to the whole tree (servers start helpers of their own), SIGKILL to what is left after 30 s."""
        if self.process.returncode is not None:
            return
        try:
            tree = self.tree()
        except psutil.Error:
            tree = []
        for process in tree:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _gone, alive = psutil.wait_procs(tree, timeout=30)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, 9)  # anything that left the tree but not the session
        self.process.wait()
        self.log.close()


def children(pid: int) -> list[psutil.Process]:
    """The direct children of `pid` by pid (gunicorn's workers under its master); none once it has exited."""
    try:
        return sorted(psutil.Process(pid).children(), key=lambda process: process.pid)
    except psutil.NoSuchProcess:
        return []


def rss_mib(process: psutil.Process) -> float:
    return round(process.memory_info().rss / 2**20, 1)


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """User + system CPU seconds of each process still alive, by pid."""
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system
        except psutil.Error:
            pass
    return seconds


def memory(processes: list[psutil.Process]) -> dict[str, Any]:
    """RSS of each process and the PSS of them all (shared pages counted once)."""
    rss, pss = [], 0.0
    for process in processes:
        try:
            info = process.memory_full_info()
            rss.append({"name": process.name(), "rss_mib": round(info.rss / 2**20, 1)})
            pss += info.pss
        except psutil.Error:
            pass
    return {"rss_per_process_mib": rss, "tree_pss_mib": round(pss / 2**20, 1)}
