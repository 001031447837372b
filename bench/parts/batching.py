"""Adaptive batching off and on (server/batching.py), our server under the peers' cases A and B.

For each variant (BATCHING off; on with BATCH_TIMEOUT_MICROS 0 and 500) this starts our server
afresh and runs batch 1 v2 JSON at 1 and 16 connections and batch 256 at 4 connections with wrk,
BENCH_ROUNDS rounds alternating the order; medians, plus the mean requests per merged model call
read from /metrics (mnist_batching_batch_requests).

    python -m bench.parts.batching   # writes bench/results/tmp/batching.json; optional part `batching` of bench.run
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

from bench.common import load_average, median, write_part
from bench.lib.bodies import case_bodies, test_digits
from bench.lib.ours import EARLIER_LAYOUT, V2_INFER, launch, server_layout
from bench.lib.processes import Running, free_port
from bench.lib.wrk import errors, requests_per_second, wrk
from bench.report import Parts, measured, render, table

SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
VARIANTS = {
    "off": {"BATCHING": "false"},
    "on, timeout 0": {"BATCHING": "true", "BATCH_TIMEOUT_MICROS": "0"},
    "on, timeout 500 us": {"BATCHING": "true", "BATCH_TIMEOUT_MICROS": "500"},
}
CASES = (("A c1", "json-1", 1), ("A c16", "json-1", 16), ("B c4", "json-256", 4))


def requests_per_call(url: str) -> float | None:
    text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
              if line.startswith("mnist_batching_batch_requests_")}
    count = values.get("mnist_batching_batch_requests_count", 0.0)
    return round(values["mnist_batching_batch_requests_sum"] / count, 2) if count else None


def one_run(settings: dict[str, str], bodies: dict[str, Any]) -> dict[str, Any]:
    port = free_port()
    server = Running(launch("batching", port, **settings), port)
    try:
        figures: dict[str, Any] = {}
        for case, body, connections in CASES:
            wrk(server.url + V2_INFER, bodies[body], connections, 1)
            raw = wrk(server.url + V2_INFER, bodies[body], connections, SECONDS)
            figures[case] = {"requests_per_second": round(requests_per_second(raw), 1),
                             "p99_ms": round(raw["p99_us"] / 1000, 2), "errors": errors(raw)}
        figures["requests_per_model_call"] = requests_per_call(server.url)
        return figures
    finally:
        server.stop()


def main() -> dict[str, Any]:
    bodies = case_bodies(test_digits(256))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for round_number in range(ROUNDS):
        for name in (list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))):
            runs[name].append(one_run(VARIANTS[name], bodies))
            print(f"bench: batching {name:20s} {runs[name][-1]}", flush=True)
    variants = {}
    for name, results in runs.items():
        variants[name] = {case: {key: median([r[case][key] for r in results]) for key in ("requests_per_second",
                                                                                          "p99_ms")}
                          for case, _body, _connections in CASES}
        variants[name]["errors"] = sum(r[case]["errors"] for r in results for case, _b, _c in CASES)
        variants[name]["requests_per_model_call"] = results[-1]["requests_per_model_call"]
    result = {"seconds_per_case": SECONDS, "rounds": ROUNDS, "layout": server_layout(), "variants": variants,
              "load_after": load_average()}
    write_part("batching", result)
    return result


def section(batching: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: req/s / p99 per variant and case, and requests per model call."""
    cases = [case for case in next(iter(batching["variants"].values())) if case[0] in "AB"]
    rows = [[name, *(f"{entry[case]['requests_per_second']:.1f} / {entry[case]['p99_ms']:.1f}" for case in cases),
             entry["requests_per_model_call"] if entry["requests_per_model_call"] is not None else "",
             entry["errors"]] for name, entry in batching["variants"].items()]
    return render("batching", measured=measured(batching), layout=batching.get("layout", EARLIER_LAYOUT),
                  seconds=batching["seconds_per_case"], rounds=batching["rounds"],
                  table=table(["variant", *cases, "requests per model call", "errors"], rows))


if __name__ == "__main__":
    print(json.dumps(main()))
