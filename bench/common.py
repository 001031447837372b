"""Helpers every benchmark part shares: paths, the machine description, statistics, memory.

Benchmarks print and write figures; nothing here asserts a time. Each part runs in its own
process (TensorFlow's thread pools and allocator would otherwise colour the next part),
writes `bench/results/tmp/<part>.json`, and `bench/run.py` merges those into `bench/results.json`.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from shared import dataset
from shared.config import KERAS_MNIST_SHA256, KERAS_MNIST_URL

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS_JSON = BENCH / "results.json"  # the published record (with results.md), committed
RESULTS_MD = BENCH / "results.md"
RESULTS = BENCH / "results"  # everything else a run writes
PROFILES = RESULTS / "profiles"  # py-spy and oneDNN profiles results.md quotes: committed with it
TMP = RESULTS / "tmp"  # git-ignored scratch: model store, bodies, logs, per-part results, peer venvs
BENCH_HOME = TMP / "home"  # MNIST_HOME for the benchmark's own trained model and dataset cache


@functools.cache
def bench_mnist() -> tuple[Path, str]:
    """The benchmark's mnist.npz and its SHA-256, got as the test suite gets it: the file MNIST_NPZ names, else
    MNIST_URL (default the Keras URL, MNIST_SHA256 checked) downloaded once into ~/.cache/mnist-stack."""
    if local := os.environ.get("MNIST_NPZ"):
        path = Path(local).expanduser().resolve()
        return path, dataset.sha256_of(path)
    expected = os.environ.get("MNIST_SHA256") or KERAS_MNIST_SHA256
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mnist-stack" / "mnist.npz"
    return dataset.fetch(os.environ.get("MNIST_URL") or KERAS_MNIST_URL, expected, cache), expected


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def load_average() -> str:
    """`uptime`'s load figures: the machine is shared, so every result records how busy it was."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openblas_env": {key: value for key, value in os.environ.items() if key.startswith("OPENBLAS_")},
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("tensorflow-cpu", "keras", "numpy", "onnxruntime", "ai-edge-litert", "flask", "gunicorn"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    try:
        found["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("[")[0].strip()
    except OSError:
        found["wrk"] = "not installed"
    return found


def write_part(name: str, result: dict[str, Any]) -> Path:
    TMP.mkdir(parents=True, exist_ok=True)
    path = TMP / f"{name}.json"
    # A part can be rerun alone (`bench.run --only`): the report shows when each was measured.
    # The machine is recorded too: parts measured in different sessions may have run on different CPUs.
    stamped = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "measured_on": machine()["cpu"],
               **result}
    path.write_text(json.dumps(stamped, indent=2))
    return path


def read_part(name: str) -> dict[str, Any] | None:
    """A part's figures from this checkout's last run of it, else the ones committed in bench/results.json."""
    path = TMP / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    return json.loads(RESULTS_JSON.read_text()).get(name) if RESULTS_JSON.is_file() else None


def run_json(args: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> dict[str, Any]:
    """Run a benchmark child (`python -m bench...`) whose last stdout line is a JSON object.

    The child's other output (Keras progress, logs) passes through so a long run shows signs of life.
    """
    process = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, text=True
    )
    last = ""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("{"):
            last = line
        else:
            print(line, end="", flush=True)
    if process.wait(timeout) != 0 or not last:
        raise RuntimeError(f"{' '.join(args)} failed with exit status {process.returncode}")
    return json.loads(last)


def py_spy() -> str | None:
    """The py-spy executable (requirements/bench.txt), or None when it is not installed."""
    beside_python = Path(sys.executable).parent / "py-spy"
    return shutil.which("py-spy") or (str(beside_python) if beside_python.exists() else None)


def summarise_profile(collapsed: str, title: str) -> str:
    """Collapsed stacks -> the functions holding the most samples, inclusive and self."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.split("\n"):  # not splitlines(): a frame's text may hold \x1c..\x1e or \x85
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame.split(" (")[0] + " (" + frame.split(" (")[-1].split("/")[-1] if " (" in frame else frame
                  for frame in stack.split(";")[1:]]  # first frame is the process
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"# {title}: {total} samples of busy threads", "", "## inclusive"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(25)]
    lines += ["", "## self"]
    lines += [f"{100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(15)]
    return "\n".join(lines) + "\n"
