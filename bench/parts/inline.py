"""Small model runs on the worker's loop (server.dataplane.INLINE_IMAGES) against every model run handed to a
compute thread (INLINE_IMAGES = 0, what the server did before): batch-1 v2 JSON with wrk at 1 and 16
connections, both servers up at once, rounds rotating their order (bench.lib.sidebyside).

    python -m bench.parts.inline [--seconds 5] [--rounds 4]

Writes bench/results/tmp/inline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

from bench.common import ROOT, TMP, write_part
from bench.lib import bodies, sidebyside
from bench.lib.ours import V2_INFER, launch, server_layout
from bench.lib.processes import Launch, Running, free_port
from bench.lib.wrk import wrk
from bench.report import Parts, measured, render, table

OFFLOADED, INLINE = "every model run on a compute thread (before)", "up to INLINE_IMAGES images on the loop"
CONNECTIONS = (1, 16)


def offloaded_app() -> Any:
    """gunicorn's app with INLINE_IMAGES = 0 (`bench.parts.inline:offloaded_app()`): the same code otherwise."""
    from server import dataplane
    from server.app import create_app

    dataplane.INLINE_IMAGES = 0
    return create_app()


def _launch(name: str, port: int) -> Launch:
    app = "bench.parts.inline:offloaded_app()" if name == OFFLOADED else "server.wsgi:app"
    return launch(name, port, app=app, log_name=f"inline-{'before' if name == OFFLOADED else 'inline'}",
                  LOG_FORMAT="json")


def measure(seconds: int, rounds: int) -> dict[str, Any]:
    from server.dataplane import INLINE_IMAGES

    body = bodies.write(TMP / "bodies" / "inline-v2-1.json", bodies.v2_json(bodies.test_digits(1)), "application/json")
    servers: dict[str, Running] = {}
    cases: dict[str, Any] = {}
    try:
        for name in (OFFLOADED, INLINE):
            port = free_port()
            servers[name] = Running(_launch(name, port), port)
        for running in servers.values():
            assert running.post(V2_INFER, body)["outputs"], running.launch.name
            wrk(running.url + V2_INFER, body, 16, 2)  # warm-up
        for connections in CONNECTIONS:
            runs, loads = sidebyside.rounds(servers, V2_INFER, body, connections, seconds, rounds)
            cases[f"c{connections}"] = {"variants": sidebyside.summary(runs), "load_average": loads}
    finally:
        for running in servers.values():
            running.stop()
    return {"cases": cases, "inline_images": INLINE_IMAGES, "seconds": seconds, "rounds": rounds,
            "layout": server_layout()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", "5")))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "4")))
    args = parser.parse_args()
    path = write_part("inline", measure(args.seconds, args.rounds))
    print(f"written {path.relative_to(ROOT)}")
    print(json.dumps(json.loads(path.read_text())), flush=True)  # last line: the JSON bench.run reads


def section(figures: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: one row per connections and variant, the ratio per round to the first."""
    rows = []
    for case, value in figures["cases"].items():
        for name, variant in value["variants"].items():
            by_round = variant.get("ratio_by_round")
            ratio = (f"{statistics.median(by_round):.3f} ({', '.join(f'{r:.2f}' for r in by_round)})"
                     if by_round else "1.000")
            rows.append([case, name, variant["requests_per_second"], ratio, variant["p50_ms"], variant["p99_ms"],
                         variant["cpu_us_per_request"], variant["errors"]])
    loads = "; ".join(", ".join(value["load_average"]) for value in figures["cases"].values())
    return render("inline", measured=measured(figures), inline_images=figures["inline_images"],
                  seconds=figures["seconds"], rounds=figures["rounds"], layout=figures["layout"], load=loads,
                  table=table(["connections", "variant", "requests/s", "vs before (each round)", "p50 ms", "p99 ms",
                               "server CPU us/request", "errors"], rows))


if __name__ == "__main__":
    main()
