"""How gunicorn spreads keep-alive connections over its workers, and what that does to throughput.

At 16 keep-alive connections one gthread worker sometimes accepted all 16 (GIL-bound, half the
throughput). For each layout (workers x threads; SO_REUSEPORT, where the kernel spreads by a hash,
or one shared socket, where our workers accept by least connections: server/balance.py) this
starts our server once, then runs wrk (16 connections, batch 1 JSON) BENCH_ACCEPT_RUNS times; wrk
opens fresh connections each run. Mid-run it counts each worker's established connections (psutil).

    python -m bench.parts.accept   # writes bench/results/tmp/accept.json; optional part `accept` of bench.run
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import psutil

from bench.common import ROOT, TMP, load_average, median, write_part
from bench.lib.ours import COMPOSE_SERVER_ENV, server_layout
from bench.lib.wrk import Body, errors, requests_per_second
from bench.parts.http import Server, write_bodies, wrk
from bench.report import Parts, measured, render, table

RUNS = int(os.environ.get("BENCH_ACCEPT_RUNS", "5"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "4"))
CONNECTIONS = 16
# (workers, threads, reuse_port): the default first (2 x 1, least connections), then what it replaced.
LAYOUTS = ((2, 1, False), (2, 2, False), (2, 2, True), (2, 1, True), (2, 4, False), (4, 1, False))


def config_file(reuse_port: bool) -> Path:
    """server/gunicorn.conf.py with reuse_port forced (gunicorn's command line can only switch it on)."""
    path = TMP / f"gunicorn-reuse-{reuse_port}.conf.py"
    conf = ROOT / "server" / "gunicorn.conf.py"
    path.write_text(f"exec(compile(open({str(conf)!r}).read(), {str(conf)!r}, 'exec'))\nreuse_port = {reuse_port}\n")
    return path


def connections_per_worker(server: Server) -> list[int]:
    counts = []
    for process in server.workers():
        try:
            # net_connections since psutil 6; the kserve client in the dev requirements may hold psutil at 5.
            sockets = getattr(process, "net_connections", getattr(process, "connections", None))(kind="tcp")
        except psutil.Error:
            continue
        counts.append(sum(1 for c in sockets if c.status == "ESTABLISHED" and c.laddr.port == server.port))
    return sorted(counts, reverse=True)


def count_into(found: list[int], server: Server) -> None:
    found.extend(connections_per_worker(server))


def measure(workers: int, threads: int, reuse_port: bool, body: Body) -> dict[str, Any]:
    env = {**COMPOSE_SERVER_ENV, "WEB_CONCURRENCY": str(workers), "THREADS": str(threads)}
    server = Server(f"accept-{workers}x{threads}-{reuse_port}", ["-c", str(config_file(reuse_port)),
                                                                  "server.wsgi:app"], env)
    runs = []
    try:
        server.check(body, 1)
        for _ in range(RUNS):
            spread: list[int] = []
            timer = threading.Timer(SECONDS / 2, count_into, (spread, server))
            timer.start()
            raw = wrk(server.url, body, CONNECTIONS, SECONDS)
            timer.join()
            runs.append({"requests_per_second": round(requests_per_second(raw), 1),
                         "p99_ms": round(raw["p99_us"] / 1000, 2), "errors": errors(raw),
                         "connections_per_worker": spread})
    finally:
        server.stop()
    rates = [run["requests_per_second"] for run in runs]
    return {"workers": workers, "threads": threads, "reuse_port": reuse_port, "runs": runs,
            "median_requests_per_second": median(rates), "min_requests_per_second": min(rates),
            "max_requests_per_second": max(rates), "median_p99_ms": median([run["p99_ms"] for run in runs]),
            "most_connections_on_one_worker": max(max(run["connections_per_worker"] or [0]) for run in runs)}


def main() -> dict[str, Any]:
    body = write_bodies()["json-1"]
    layouts = {}
    for workers, threads, reuse_port in LAYOUTS:
        name = f"{workers}x{threads} {'SO_REUSEPORT' if reuse_port else 'least connections'}"
        layouts[name] = measure(workers, threads, reuse_port, body)
        entry = layouts[name]
        print(f"bench: {name:24s} req/s median {entry['median_requests_per_second']} (min"
              f" {entry['min_requests_per_second']}, max {entry['max_requests_per_second']}), p99"
              f" {entry['median_p99_ms']} ms, spreads {[run['connections_per_worker'] for run in entry['runs']]}",
              flush=True)
    result = {"runs": RUNS, "seconds_per_run": SECONDS, "connections": CONNECTIONS, "layouts": layouts,
              "load_after": load_average()}
    write_part("accept", result)
    return result


def section(accept: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: req/s and p99 per layout, and how the connections spread each run."""
    rows = [[name, entry["median_requests_per_second"],
             f"{entry['min_requests_per_second']} - {entry['max_requests_per_second']}", entry["median_p99_ms"],
             "; ".join("/".join(map(str, run["connections_per_worker"])) for run in entry["runs"])]
            for name, entry in accept["layouts"].items()]
    return render("accept", measured=measured(accept), connections=accept["connections"], runs=accept["runs"],
                  seconds=accept["seconds_per_run"], layout=server_layout(),
                  table=table(["layout", "median req/s", "min - max req/s", "median p99 ms",
                               "connections per worker, each run"], rows))


if __name__ == "__main__":
    print(json.dumps(main()))
