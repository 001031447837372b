"""bench/results.json and bench/results.md from every part's figures: the published record of `make bench`.

results.md is a header (machine, versions, how to rerun each part), the headline, one section per part that
has figures (bench/parts' registry, in its order) and the targets; every piece is a template in bench/templates/.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any

from bench.common import RESULTS_JSON, RESULTS_MD, ROOT, load_average, machine, read_part, versions
from bench.parts import PARTS
from bench.report import Parts, code, fragment, render, table

# The frames under the route are where a request's time goes; the WSGI/thread frames above are 100%.
PROFILE_KEYS = ("predict", "Session.run", "request_pixels", "json", "loads", "dumps", "npy", "astype", "instances",
                "make_response")


def training_rows(training: dict[str, Any]) -> list[list[Any]]:
    ours, reference = training["ours"], training["reference"]
    return [
        [f"training, median s/epoch ({training['epochs']} epochs)", ours["median_epoch_seconds"],
         f"{reference['median_epoch_seconds']} (reference notebook)", f"speed {training['speedup']}x"],
        ["training, CPU s/epoch", ours["median_epoch_cpu_seconds"], reference["median_epoch_cpu_seconds"],
         f"speed {training['cpu_speedup']}x"],
        ["test accuracy after the last epoch", f"{ours['val_accuracy'][-1]:.4f}",
         f"{reference['val_accuracy'][-1]:.4f}", f"{training['accuracy_difference']:+.4f}"],
    ]


def http_rows(http: dict[str, Any]) -> list[list[Any]]:
    ours, naive = http["ours"], http["naive"]
    one, naive_one = ours["cases"]["json batch 1 c16"], naive["cases"]["json batch 1 c16"]
    limit = http["in_process_limit"]

    def best(fmt: str) -> float:
        return max(ours["cases"][f"{fmt} batch 256 c{c}"]["images_per_second"] for c in (1, 16))

    return [
        ["batch 1 JSON, 16 connections: req/s", one["requests_per_second"],
         f"{naive_one['requests_per_second']} (naive server)",
         f"{one['requests_per_second'] / naive_one['requests_per_second']:.0f}x"],
        ["batch 1 JSON, 16 connections: p99 ms", one["p99_ms"], naive_one["p99_ms"],
         f"{one['p99_ms'] / naive_one['p99_ms']:.2f}x"],
        ["batch 256 .npy over HTTP: images/s", best("npy"), f"{limit} (in-process ONNX Runtime)",
         f"{best('npy') / limit:.0%}"],
        ["batch 256 JSON over HTTP: images/s", best("json"), limit, f"{best('json') / limit:.0%}"],
        *[[f"batch 256 {name} over HTTP: images/s", best(fmt), limit, f"{best(fmt) / limit:.0%}"]
          for name, fmt in (("v2 binary", "v2bin"), ("v2 JSON", "v2json")) if f"{fmt} batch 256 c1" in ours["cases"]],
        ["start to ready, s", ours["start_to_ready_seconds"], naive["start_to_ready_seconds"], ""],
        ["RSS per worker, MiB", ", ".join(map(str, ours["worker_rss_mib"])),
         ", ".join(map(str, naive["worker_rss_mib"])), ""],
    ]


def headline(parts: Parts) -> list[str]:
    """The summary table: each of our figures beside its baseline from the same run."""
    rows = [*(training_rows(parts["training"]) if parts.get("training") else []),
            *(http_rows(parts["http"]) if parts.get("http") else [])]
    return render("headline", table=table(["", "ours", "baseline", "ratio"], rows))


def targets(parts: Parts) -> list[str]:
    """Each target's measured ratio, and for a missed serving target the profile of its load."""
    training, http = parts.get("training"), parts.get("http")
    rows = []
    if training:
        met = training["speedup"] >= 1 and training["accuracy_difference"] >= -0.002
        rows.append(["training s/epoch, ours vs reference", f"{training['speedup']}x faster",
                     ">= 1x, final accuracy at most 0.002 below (seed noise)", "met" if met else "missed", ""])
    profiles: list[str] = []
    for name, target in (http or {}).get("targets", {}).items():
        profile = target.get("profile")
        rows.append([name, target["ratio"], target["target"], "met" if target["met"] else "missed",
                     f"`{profile}`" if profile else ""])
        if profile and profile not in profiles:
            profiles.append(profile)
    return render("targets", table=table(["target", "measured", "wanted", "", "profile"], rows),
                  profiles="\n\n".join(target_profile(profile) for profile in profiles))


def target_profile(path: str) -> str:
    text = (ROOT / path).read_text().splitlines()
    lines = [line for line in text if any(key in line for key in PROFILE_KEYS)]
    return fragment("target-profile", path=path, title=text[0].lstrip("# "), listing=code(lines[:14]))


def commands(parts: Parts) -> dict[str, str]:
    """How to rerun everything and each part, with the epochs and rounds the training figures were made with."""
    training = parts.get("training") or {}
    fields = {"epochs": training.get("epochs", 1), "rounds": training.get("rounds", 1)}
    everything = ("make bench BENCH_EPOCHS={epochs} BENCH_ROUNDS={rounds}"
                  "   # = .venv/bin/python -m bench.run --epochs {epochs}")
    return {"all": everything.format(**fields), **{part.name: part.command.format(**fields) for part in PARTS}}


def header(results: dict[str, Any]) -> list[str]:
    info = results["machine"]
    return render("header", table=table(["", ""], [
        ["date", results["date"]],
        ["machine writing this report",
         f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Linux {info['kernel']}"],
        ["versions", ", ".join(f"{name} {version}" for name, version in results["versions"].items())],
        ["load average at the end (1/5/15 min)", results["load_average"]],
        *[[f"command ({name})", f"`{command}`"] for name, command in results["commands"].items()],
    ]))


def collect(fresh: Collection[str], rerender: bool = False) -> dict[str, Any]:
    """The figures of the `fresh` parts from their last run (bench/results/tmp/<part>.json), every other part's
    as results.json publishes them, with the machine, versions and rerun commands (`rerender`: the date,
    machine, versions and load results.json records, as nothing was measured now)."""
    published = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}
    parts = {part.name: read_part(part.name) if part.name in fresh else published.get(part.name) for part in PARTS}
    now = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "versions": versions(),
           "load_average": load_average()}
    if rerender:
        now = {key: published.get(key, value) for key, value in now.items()}
    return {**now, "commands": commands(parts), **parts}


def markdown(results: dict[str, Any]) -> str:
    """results.md's text for `results` (what results.json holds)."""
    parts = {part.name: results.get(part.name) for part in PARTS}
    lines = [*header(results), *headline(parts)]
    for part in PARTS:
        if parts[part.name]:
            lines += part.section(parts[part.name], parts)
    return "\n".join([*lines, *targets(parts)])


def write_report(fresh: Collection[str], rerender: bool = False) -> dict[str, Any]:
    """Merge the `fresh` parts' last figures into results.json and render results.md from it."""
    results = collect(fresh, rerender)
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    RESULTS_MD.write_text(markdown(results))
    return results
