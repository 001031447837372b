"""Is our A c16 figure stable? One start of our server, then case A c16 (batch 1 v2 JSON, 16
connections) BENCH_STABILITY_RUNS times in a row; wrk opens fresh connections each run, so each
run gets a new spread of connections over the workers. Reports each run and the spread of their
throughput, (max - min) / max: issue 13 wants at most 10 %.

    python -m bench.parts.stability   # writes bench/results/tmp/stability.json; optional part `stability` of bench.run
"""

from __future__ import annotations

import json
import os
from typing import Any

from bench.common import load_average, write_part
from bench.parts.peers import (
    CASES,
    SECONDS,
    WARMUP,
    PeerServer,
    case_target,
    check,
    figures,
    free_port,
    prepare,
    specs,
    wrk,
)
from bench.report import Parts, measured, render

RUNS = int(os.environ.get("BENCH_STABILITY_RUNS", "5"))
CASE = "A c16"


def main() -> dict[str, Any]:
    model, bodies, expected = prepare()
    port = free_port()
    spec = specs(model, port)["ours"]
    _case, size, kind, connections = next(case for case in CASES if case[0] == CASE)
    path, body = case_target(spec, kind, size, bodies)
    server = PeerServer(spec, port)
    try:
        check(server, bodies, expected)
        wrk(server.url + path, body, connections, WARMUP or 1)
        runs = []
        for _ in range(RUNS):
            runs.append(figures(wrk(server.url + path, body, connections, SECONDS), size))
            print(f"bench: stability {CASE} {runs[-1]['requests_per_second']:8.1f} req/s"
                  f" p99 {runs[-1]['p99_ms']:7.2f} ms", flush=True)
    finally:
        server.stop()
    rates = [run["requests_per_second"] for run in runs]
    result = {"case": CASE, "seconds_per_run": SECONDS, "runs": runs,
              "spread": round((max(rates) - min(rates)) / max(rates), 3), "load_after": load_average()}
    write_part("stability", result)
    return result


def section(check: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's paragraph (after the peers' section): each run, and their spread."""
    return render("stability", case=check["case"], count=len(check["runs"]), measured=measured(check),
                  seconds=check["seconds_per_run"], spread=f"{100 * check['spread']:.1f}",
                  runs=", ".join(f"{run['requests_per_second']} req/s (p99 {run['p99_ms']} ms)"
                                 for run in check["runs"]))


if __name__ == "__main__":
    print(json.dumps(main()))
