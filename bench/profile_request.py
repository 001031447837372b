"""Where a batch-1 request's time goes: py-spy on one gunicorn worker under wrk load.

Starts our server (docker-compose.yml's settings), drives case A (batch 1 v2 JSON, 16
connections) with wrk, samples one worker with py-spy for BENCH_PROFILE_SECONDS and writes the
flame graph to bench/profile-request.svg and its largest frames (inclusive share of the samples)
to bench/profile-request.txt.

    python -m bench.profile_request
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import threading

import numpy as np

from bench.common import ROOT, bench_mnist, children_of, py_spy
from bench.peers_bench import BENCH_HOME, COMPOSE_SERVER_ENV, Running, Spec, free_port, write_bodies, wrk

SECONDS = 10
SVG = ROOT / "bench" / "profile-request.svg"
SUMMARY = ROOT / "bench" / "profile-request.txt"
# Frames worth reading in the summary: ours, the WSGI/HTTP layers, the model call, JSON and NumPy.
INTERESTING = ("server/", "flask/", "werkzeug/", "gunicorn/", "onnxruntime", "json", "numpy", "socket")


def frames(svg: str) -> dict[str, float]:
    """Inclusive share (%) per frame, summed over the places it appears in the flame graph."""
    shares: dict[str, float] = {}
    for title in re.findall(r"<title>(.*?)</title>", svg, re.S):
        match = re.match(r"(.*) \(([\d,]+) samples?, ([\d.]+)%\)$", html.unescape(title).strip())
        if match:
            shares[match.group(1)] = shares.get(match.group(1), 0.0) + float(match.group(3))
    return shares


def main() -> None:
    spy = py_spy()
    if spy is None:
        raise SystemExit("py-spy not found (requirements/bench.txt)")
    with np.load(bench_mnist()[0]) as archive:
        body = write_bodies(archive["x_test"][:256])["json-1"]
    port = free_port()
    env = {**COMPOSE_SERVER_ENV, "MNIST_HOME": str(BENCH_HOME), "BIND_HOST": "127.0.0.1", "PORT": str(port)}
    server = Running(Spec("ours", "", [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py",
                                       "server.wsgi:app"], "/readyz", env=env), port)
    try:
        url = server.url + "/v2/models/mnist/infer"
        wrk(url, body, 16, 2)  # warm-up
        worker = children_of(server.process.pid)[0]
        figures: dict[str, object] = {}
        load = threading.Thread(target=lambda: figures.update(wrk(url, body, 16, SECONDS + 4)))
        load.start()
        # Paths relative to the repo: py-spy writes its command line into the SVG's title.
        record = [os.path.relpath(spy, ROOT), "record", "--pid", str(worker), "--duration", str(SECONDS),
                  "--rate", "250", "--nonblocking", "--format", "flamegraph", "-o", str(SVG.relative_to(ROOT))]
        subprocess.run(record, check=True, capture_output=True, cwd=ROOT)
        load.join()
    finally:
        server.stop()
    shares = frames(SVG.read_text())
    rate = figures["requests"] / (figures["duration_us"] / 1e6)  # type: ignore[operator]
    lines = [f"# py-spy, one of 2 workers, batch 1 v2 JSON, 16 connections, {SECONDS} s: {rate:.0f} req/s"
             f" (both workers), inclusive share of the worker's busy samples", ""]
    lines += [f"{share:6.2f}%  {name}" for name, share in sorted(shares.items(), key=lambda item: -item[1])
              if share >= 0.8 and any(key in name for key in INTERESTING)]
    SUMMARY.write_text("\n".join(lines) + "\n")
    print(SUMMARY.read_text())


if __name__ == "__main__":
    main()
