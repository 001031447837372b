"""Work on the worker's loop, step by step: every model run and decode handed to a compute thread; small model
runs on the loop (server.dataplane.INLINE_IMAGES); and small bodies decoded there too (server.pipeline.
INLINE_BODY_BYTES, the server as it is): batch-1 v2 JSON with wrk at 1 and 16 connections, the four servers up
at once, rounds rotating their order (bench.lib.sidebyside).

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

OFFLOADED = "every model run and decode on a compute thread (before)"
MODEL_INLINE = "model runs of up to INLINE_IMAGES images on the loop"
DECODE_UNFAIR = "and small bodies decoded there, without waiting for the loop's other connections"
DECODE_INLINE = "and bodies of up to INLINE_BODY_BYTES decoded there (now)"
CONNECTIONS = (1, 16)


def _decode_offloaded() -> None:
    from server import compute, pipeline

    def decode(codec: Any, body: bytes, headers: Any, version: int | None, max_batch_size: int) -> Any:
        return compute.offload(codec.decode, body, headers, version, max_batch_size)

    pipeline.decode = decode


def offloaded_app() -> Any:
    """gunicorn's app with INLINE_IMAGES = 0 and every decode offloaded (`bench.parts.inline:offloaded_app()`)."""
    from server import dataplane
    from server.app import create_app

    dataplane.INLINE_IMAGES = 0
    _decode_offloaded()
    return create_app()


def model_inline_app() -> Any:
    """gunicorn's app with every decode offloaded (`bench.parts.inline:model_inline_app()`)."""
    from server.app import create_app

    _decode_offloaded()
    return create_app()


def unfair_app() -> Any:
    """gunicorn's app decoding on the loop without `compute.take_turn` (`bench.parts.inline:unfair_app()`)."""
    from server import compute
    from server.app import create_app

    compute.take_turn = lambda: None
    return create_app()


APPS = {OFFLOADED: ("bench.parts.inline:offloaded_app()", "before"),
        MODEL_INLINE: ("bench.parts.inline:model_inline_app()", "model"),
        DECODE_UNFAIR: ("bench.parts.inline:unfair_app()", "unfair"),
        DECODE_INLINE: ("server.wsgi:app", "now")}


def _launch(name: str, port: int) -> Launch:
    app, log = APPS[name]
    return launch(name, port, app=app, log_name=f"inline-{log}", LOG_FORMAT="json")


def measure(seconds: int, rounds: int) -> dict[str, Any]:
    from server.dataplane import INLINE_IMAGES
    from server.pipeline import INLINE_BODY_BYTES

    body = bodies.write(TMP / "bodies" / "inline-v2-1.json", bodies.v2_json(bodies.test_digits(1)), "application/json")
    servers: dict[str, Running] = {}
    cases: dict[str, Any] = {}
    try:
        for name in APPS:
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
    return {"cases": cases, "inline_images": INLINE_IMAGES, "inline_body_bytes": INLINE_BODY_BYTES,
            "seconds": seconds, "rounds": rounds,
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
                  inline_body_bytes=figures["inline_body_bytes"],
                  seconds=figures["seconds"], rounds=figures["rounds"], layout=figures["layout"], load=loads,
                  table=table(["connections", "variant", "requests/s", "vs before (each round)", "p50 ms", "p99 ms",
                               "server CPU us/request", "errors"], rows))


if __name__ == "__main__":
    main()
