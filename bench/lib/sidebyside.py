"""Side by side: wrk against several servers that are all up at once, in rounds that rotate their order (each
server takes each place), so the shared machine's load falls on all of them alike; per server the median
figures and each round's ratio to the first server's run in the same round."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from bench.common import load_average
from bench.lib.processes import Running, cpu_seconds
from bench.lib.wrk import Body, wrk
from bench.lib.wrk import figures as wrk_figures

MEDIANS = ("requests_per_second", "p50_ms", "p99_ms", "cpu_us_per_request")


def one_run(running: Running, path: str, body: Body, connections: int, seconds: int) -> dict[str, Any]:
    """wrk's figures for one server, and its process tree's CPU per request meanwhile."""
    tree = running.tree()
    before = cpu_seconds(tree)
    raw = wrk(running.url + path, body, connections, seconds)
    after = cpu_seconds(tree)
    run = wrk_figures(raw, 1)
    run["cpu_us_per_request"] = round(sum(after[pid] - before.get(pid, 0.0) for pid in after)
                                      / max(raw["requests"], 1) * 1e6, 1)
    return run


def rounds(servers: Mapping[str, Running], path: str, body: Body, connections: int, seconds: int,
           count: int) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """`count` rounds, each server once per round; the runs per server and the load average after each round."""
    names = list(servers)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    loads = [load_average()]
    for number in range(count):
        turn = number % len(names)
        for name in names[turn:] + names[:turn]:
            runs[name].append(one_run(servers[name], path, body, connections, seconds))
        loads.append(load_average())
        print(f"c{connections} round {number + 1}/{count} (load {loads[-1]}): " + ", ".join(
            f"{name} {runs[name][-1]['requests_per_second']} req/s {runs[name][-1]['cpu_us_per_request']} us CPU"
            for name in names), flush=True)
    return runs, loads


def summary(runs: Mapping[str, list[dict[str, Any]]], ratio_key: str = "ratio_by_round") -> dict[str, dict[str, Any]]:
    """Per server: medians over rounds, errors, each round's req/s, and (all but the first server) each round's
    ratio to the first server's run in the same round."""
    base = next(iter(runs.values()))
    result: dict[str, dict[str, Any]] = {}
    for position, (name, own) in enumerate(runs.items()):
        result[name] = {key: round(statistics.median(run[key] for run in own), 2) for key in MEDIANS}
        result[name]["errors"] = sum(run["errors"] for run in own)
        result[name]["rounds_requests_per_second"] = [run["requests_per_second"] for run in own]
        if position:
            result[name][ratio_key] = [
                round(run["requests_per_second"] / first["requests_per_second"], 3)
                for run, first in zip(own, base, strict=True)]
    return result
