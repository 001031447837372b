"""Where a batch-1 request's time goes: py-spy on one gunicorn worker under wrk load.

Starts our server (docker-compose.yml's settings), drives case A (batch 1 v2 JSON, 16
connections) with wrk, samples one worker with py-spy for BENCH_PROFILE_SECONDS and writes the
flame graph to bench/results/profiles/profile-request.svg and its largest frames (inclusive share of the
samples) to bench/results/profiles/profile-request.txt, which results.md quotes.

    python -m bench.run --only profile   # or python -m bench.parts.profile
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import threading
from typing import Any

from bench.common import PROFILES, ROOT, py_spy, write_part
from bench.lib.bodies import case_bodies, test_digits
from bench.lib.ours import V2_INFER, launch
from bench.lib.processes import Running, free_port
from bench.lib.wrk import wrk
from bench.report import Parts, code, render

SECONDS = int(os.environ.get("BENCH_PROFILE_SECONDS", "10"))
SVG = PROFILES / "profile-request.svg"
SUMMARY = PROFILES / "profile-request.txt"
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


def main() -> dict[str, Any]:
    spy = py_spy()
    if spy is None:
        raise SystemExit("py-spy not found (requirements/bench.txt)")
    body = case_bodies(test_digits(256))["json-1"]
    port = free_port()
    server = Running(launch("ours", port), port)
    try:
        url = server.url + V2_INFER
        wrk(url, body, 16, 2)  # warm-up
        worker = server.workers()[0].pid
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
    print(SUMMARY.read_text(), flush=True)
    result = {"requests_per_second": round(rate, 1), "seconds": SECONDS, "summary": str(SUMMARY.relative_to(ROOT)),
              "svg": str(SVG.relative_to(ROOT))}
    write_part("profile", result)
    return result


def section(part: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: the summary's largest frames, with the flame graph named beside it."""
    path = ROOT / part["summary"]
    if not path.is_file():
        return []
    title, *lines = path.read_text().splitlines()
    return render("profile", title=title.lstrip("# "), svg=part["svg"],
                  listing=code([line for line in lines if line.strip()][:30]))


if __name__ == "__main__":
    print(json.dumps(main()))
