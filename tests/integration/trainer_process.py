"""A real trainer process whose output is read line by line while it runs (for kill-and-resume tests)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, trainer_env
from helpers import eventually


class TrainerProcess:
    def __init__(self, home: Path, url: str, driver: str | None = None, **env: str) -> None:
        """`python -m trainer`, or `python -c driver` (a script that patches the trainer, then runs it)."""
        command = [sys.executable, "-c", driver] if driver else [sys.executable, "-m", "trainer"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=trainer_env(home, url, **env),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
        """Until `condition()`; fails with the output (killing the trainer) if it ends or time runs out."""
        def reached() -> bool:
            if condition():
                return True
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"trainer exited ({self.process.returncode}) before {what}:\n{self.output()}")
            return False

        try:
            eventually(reached, what, timeout, interval=0.01, detail=self.output)
        except AssertionError:
            self.kill()
            raise

    def wait_for_line(self, pattern: str, timeout: float) -> None:
        self.wait_for(lambda: any(re.search(pattern, line) for line in list(self.lines)),
                      f"line like {pattern!r}", timeout)

    def kill(self) -> int:
        self.process.send_signal(signal.SIGKILL)
        return self.finish(30)

    def finish(self, timeout: float = 600) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def epochs_run(self) -> list[int]:
        return [int(match[1]) for match in re.finditer(r"^epoch (\d+)/\d+:", self.output(), re.MULTILINE)]


def backups(home: Path) -> list[Path]:
    """The run backups under `home` (trainer/resume.py)."""
    root = home / "training-backup"
    return sorted(root.iterdir()) if root.is_dir() else []


def saved_epochs(home: Path) -> int:
    """Epochs finished in the one backup under `home`; 0 while there is none (or it is being written)."""
    try:
        [backup] = backups(home)
        return json.loads((backup / "training_metadata.json").read_text())["epoch"]
    except (ValueError, OSError, KeyError):
        return 0
