"""The folder prometheus_client's multiprocess mode shares between a server's processes.

Every process of one server (gunicorn's workers, the gRPC server's processes) writes its samples to
files in one folder, and /metrics adds them up (server/metrics.py). The folder must exist, hold no
file of an earlier run and be named in PROMETHEUS_MULTIPROC_DIR before any of those processes
imports prometheus_client, so this module is standard library only: the parent process calls it first.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare(prefix: str) -> tuple[str, bool]:
    """The folder PROMETHEUS_MULTIPROC_DIR names, emptied of an earlier run's files, or a new temporary one
    (then set in the environment); and whether it was made here (so `remove` may delete it)."""
    folder = os.environ.get(VARIABLE)
    if not folder:
        folder = tempfile.mkdtemp(prefix=prefix)
        os.environ[VARIABLE] = folder
        return folder, True
    os.makedirs(folder, exist_ok=True)
    for stale in glob.glob(os.path.join(folder, "*.db")):
        os.remove(stale)  # from a previous run: would be added to this run's counters
    return folder, False


def remove(folder: str, own: bool) -> None:
    """Delete the folder at exit if `prepare` made it."""
    if own:
        shutil.rmtree(folder, ignore_errors=True)
