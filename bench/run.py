"""`make bench`: every benchmark part in its own process, then bench/results.json and results.md.

    python -m bench.run [--epochs N] [--only training,inference,http]

Parts: training (reference vs ours; also publishes the model the others use), inference
(in-process runtimes), http (our server vs the naive one under wrk). `--only` reruns some
parts and reports the others from their last run (each part records when it was measured).
Figures are printed and written; no time is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import ROOT, TMP, load_average, machine, read_part, run_json, versions
from bench.http_bench import EARLIER_LAYOUT, server_layout
from bench.observability_bench import section as observability_section
from bench.recipes_bench import section as recipes_section
from bench.store_bench import section as store_section
from server.backends import RUN_SLICE

# store: publish-to-served on a volume vs a bucket (local rclone serve s3) and start-to-ready, about 40 s.
PARTS = ("training", "inference", "http", "store")
# Reported when measured, not run by default: variants (about 12 minutes), ort (session settings, about 3 minutes),
# accept (connection spreading over workers, about 2 minutes), peers (other serving frameworks: `make bench-peers`).
OPTIONAL_PARTS = ("variants", "ort", "accept", "batching", "peers", "stability", "floor", "recipes", "grpc",
                  "observability")
OPTIONAL_MODULES = {"ort": "bench.ort_variants", "accept": "bench.accept_bench", "batching": "bench.batching_bench",
                    "peers": "bench.peers_bench", "stability": "bench.stability_bench", "floor": "bench.model_floor",
                    "recipes": "bench.recipes_bench", "grpc": "bench.grpc_bench",
                    "observability": "bench.observability_bench"}
RESULTS_JSON = ROOT / "bench" / "results.json"
RESULTS_MD = ROOT / "bench" / "results.md"

LAYOUT = server_layout()


def run_parts(parts: list[str], epochs: int) -> None:
    for part in parts:
        print(f"bench: --- {part} (load {load_average()}) ---", flush=True)
        if part == "training":
            run_json(["-m", "bench.train_bench", str(epochs)])
        elif part == "store":
            run_json(["-m", "bench.store_bench"])
        elif part in OPTIONAL_MODULES:
            run_json(["-m", OPTIONAL_MODULES[part]])
        elif part in ("inference", "variants"):
            run_json(["-m", f"bench.{part}_bench" if part == "inference" else "bench.train_variants"])
        elif shutil.which("wrk"):
            run_json(["-m", "bench.http_bench"])
        else:
            print("bench: wrk not found (apt-get install wrk); HTTP part skipped", flush=True)


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def headline(training: dict[str, Any] | None, http: dict[str, Any] | None) -> list[str]:
    """The README's table: each of our figures beside its baseline from the same run."""
    rows = []
    if training:
        ours, reference = training["ours"], training["reference"]
        rows += [
            [f"training, median s/epoch ({training['epochs']} epochs)", ours["median_epoch_seconds"],
             f"{reference['median_epoch_seconds']} (reference notebook)", f"speed {training['speedup']}x"],
            ["training, CPU s/epoch", ours["median_epoch_cpu_seconds"], reference["median_epoch_cpu_seconds"],
             f"speed {training['cpu_speedup']}x"],
            ["test accuracy after the last epoch", f"{ours['val_accuracy'][-1]:.4f}",
             f"{reference['val_accuracy'][-1]:.4f}", f"{training['accuracy_difference']:+.4f}"],
        ]
    if http:
        ours_cases, naive_cases = http["ours"]["cases"], http["naive"]["cases"]
        one, naive_one = ours_cases["json batch 1 c16"], naive_cases["json batch 1 c16"]
        limit = http["in_process_limit"]
        npy = max(ours_cases[f"npy batch 256 c{c}"]["images_per_second"] for c in (1, 16))
        json_rate = max(ours_cases[f"json batch 256 c{c}"]["images_per_second"] for c in (1, 16))
        v2_rows = [[f"batch 256 {name} over HTTP: images/s", rate, limit, f"{rate / limit:.0%}"]
                   for name, fmt in (("v2 binary", "v2bin"), ("v2 JSON", "v2json"))
                   if f"{fmt} batch 256 c1" in ours_cases
                   for rate in [max(ours_cases[f"{fmt} batch 256 c{c}"]["images_per_second"] for c in (1, 16))]]
        rows += [
            ["batch 1 JSON, 16 connections: req/s", one["requests_per_second"],
             f"{naive_one['requests_per_second']} (naive server)",
             f"{one['requests_per_second'] / naive_one['requests_per_second']:.0f}x"],
            ["batch 1 JSON, 16 connections: p99 ms", one["p99_ms"], naive_one["p99_ms"],
             f"{one['p99_ms'] / naive_one['p99_ms']:.2f}x"],
            ["batch 256 .npy over HTTP: images/s", npy, f"{limit} (in-process ONNX Runtime)", f"{npy / limit:.0%}"],
            ["batch 256 JSON over HTTP: images/s", json_rate, limit, f"{json_rate / limit:.0%}"],
            *v2_rows,
            ["start to ready, s", http["ours"]["start_to_ready_seconds"], http["naive"]["start_to_ready_seconds"], ""],
            ["RSS per worker, MiB", ", ".join(map(str, http["ours"]["worker_rss_mib"])),
             ", ".join(map(str, http["naive"]["worker_rss_mib"])), ""],
        ]
    return ["## Headline", "", *table(["", "ours", "baseline", "ratio"], rows), ""]


def measured(part: dict[str, Any]) -> str:
    where = f" on {part['measured_on']}" if "measured_on" in part else ""
    return f"measured {part.get('measured_at', 'at an unrecorded time')}{where}"


def training_section(training: dict[str, Any]) -> list[str]:
    rows = []
    for side in ("reference", "ours"):
        entry = training[side]
        rows.append([side, entry["median_epoch_seconds"], entry.get("median_epoch_cpu_seconds", ""),
                     entry["samples_per_second"],
                     ", ".join(f"{value:.4f}" for value in entry["val_accuracy"]), entry["peak_rss_mib"],
                     entry["load_before"]])
    return [
        f"## Training: {training['epochs']} epoch(s) on 60,000 images, batch 128,"
        f" {training.get('rounds', 1)} round(s) ({measured(training)})",
        "",
        *table(["side", "median s/epoch", "CPU s/epoch", "samples/s", "test accuracy per epoch", "peak RSS MiB",
                "load before"], rows),
        "",
        f"Speed-up of ours over the reference: **{training['speedup']}x** per epoch in wall seconds,"
        f" {training.get('cpu_speedup', '?')}x in CPU seconds (all threads of the process: what other jobs on a"
        f" shared machine disturb least); final test accuracy difference {training['accuracy_difference']:+.4f}."
        " Reference = `bench/reference_train.py` (the notebook code); ours = `python -m trainer`'s `train()`."
        " samples/s = 60,000 / median wall s/epoch; peak RSS is ru_maxrss of each process. Medians pool every"
        " epoch of every round; rounds alternate the order (reference first, then ours first, ...) and the"
        " accuracy per epoch is the median across rounds (`BENCH_ROUNDS`, default 1).",
        "",
        "Both sides fit the reference model with `model.fit` on the same float32 arrays, optimizer, batch and"
        " epochs; only the seed differs (ours is fixed, the notebook's is not). The difference is the precision"
        f" the layers compute in: ours trained in **{training['ours'].get('precision', 'an unrecorded precision')}**"
        " (`TRAIN_PRECISION=auto`: Keras' mixed_bfloat16 policy where the CPU has AMX bfloat16 tiles, float32"
        " elsewhere; weights, softmax output and the published model stay float32), the reference in float32."
        " What else was tried, and the profiles of where the time goes, are in \"Training variants tried\""
        " (`--only variants`).",
        "",
    ]


def variants_section(variants: dict[str, Any]) -> list[str]:
    rows = [[name, entry["what"], round(entry["median_epoch_seconds"], 2), round(entry["median_epoch_cpu_seconds"], 2),
             entry["cpu_vs_base"], f"{entry['val_accuracy']:.4f}"] for name, entry in variants["variants"].items()]
    return [
        f"## Training variants tried ({measured(variants)})",
        "",
        f"Our trainer's path on the first {variants['subset']:,} images, epoch {variants['epochs']} of"
        f" {variants['epochs']}, medians of {variants['rounds']} alternating rounds"
        " (`python -m bench.train_variants`).",
        "",
        *table(["variant", "what changes", "wall s/epoch", "CPU s/epoch", "CPU vs base", "test accuracy"], rows),
        "",
        *training_profiles(variants.get("profiles", {})),
    ]


def training_profiles(profiles: dict[str, str | None]) -> list[str]:
    """Each profiled variant's oneDNN kernel table (bench/profile-training-*.txt), as written."""
    lines = []
    for profile in profiles.values():
        if not profile:
            continue
        title, _, kernels = (ROOT / profile).read_text().partition("\n\n")
        lines += [f"Profile `{profile}`: {title.lstrip('# ')}", "", "```", kernels.rstrip(), "```", ""]
    return lines


def inference_section(inference: dict[str, Any]) -> list[str]:
    rows = []
    for name, entry in inference["runtimes"].items():
        batches = entry["batches"]
        rows.append([name, *(f"{batches[size]['latency_ms']} / {batches[size]['images_per_second']:.0f}"
                             for size in ("1", "32", "256", "1000")),
                     f"{entry['argmax_agreement']:.4f}", f"{entry['max_probability_difference']:.1e}"])
    return [
        f"## In-process inference ({measured(inference)})",
        "",
        "Median latency ms / images per second per call; agreement and largest probability difference"
        " against Keras `model.predict` on all 10,000 test digits.",
        "",
        *table(["runtime", "batch 1", "batch 32", "batch 256", "batch 1000", "argmax agreement", "max prob diff"],
               rows),
        "",
    ]


def ort_section(ort: dict[str, Any]) -> list[str]:
    rows = []
    for name, entry in ort["variants"].items():
        rows.append([name, entry["what"], *(f"{entry['cpu_ms'][size]} / {entry['latency_ms'][size]}"
                                             for size in ("1", "32", "256")),
                     entry["memory_after_mix"]["rss_mib"], entry["memory_after_mix"]["pss_mib"]])
    return [
        f"## ONNX Runtime session settings ({measured(ort)})",
        "",
        "One 1-thread session per variant, each in a fresh process (`python -m bench.ort_variants`): median CPU ms"
        " / wall ms per call in one thread (CPU time counts page faults and is what other jobs on the shared cores"
        f" disturb least), medians of {ort.get('rounds', 1)} alternating round(s); then RSS and PSS of the"
        f" process after {ort['mix_rounds']} rounds of batches {', '.join(map(str, ort['mix']))}. The server"
        f" keeps the arena on and runs batches in slices of `RUN_SLICE` = {RUN_SLICE} images (`server/backends.py`).",
        "",
        *table(["variant", "what", "batch 1 CPU / wall ms", "batch 32", "batch 256", "RSS MiB after mix",
                "PSS MiB after mix"], rows),
        "",
    ]


def accept_section(accept: dict[str, Any]) -> list[str]:
    rows = [[name, entry["median_requests_per_second"], f"{entry['min_requests_per_second']}"
             f" - {entry['max_requests_per_second']}", entry["median_p99_ms"],
             "; ".join("/".join(map(str, run["connections_per_worker"])) for run in entry["runs"])]
            for name, entry in accept["layouts"].items()]
    return [
        f"## Connections over gunicorn workers ({measured(accept)})",
        "",
        f"Batch 1 JSON on `/predict`, wrk with {accept['connections']} keep-alive connections, {accept['runs']} runs of"
        f" {accept['seconds_per_run']} s per layout against one server (`python -m bench.accept_bench`); each run"
        " opens fresh connections. The spread is each worker's established connections mid-run. SO_REUSEPORT: each"
        " worker has its own socket and the kernel spreads connections by a hash of the addresses; least connections:"
        " one shared socket, and a worker that holds more connections than another leaves the next one to it"
        f" (server/balance.py). The server uses least connections and {LAYOUT} by default.",
        "",
        *table(["layout", "median req/s", "min - max req/s", "median p99 ms", "connections per worker, each run"],
               rows),
        "",
    ]


def batching_section(batching: dict[str, Any]) -> list[str]:
    cases = [case for case in next(iter(batching["variants"].values())) if case[0] in "AB"]
    rows = [[name, *(f"{entry[case]['requests_per_second']:.1f} / {entry[case]['p99_ms']:.1f}" for case in cases),
             entry["requests_per_model_call"] if entry["requests_per_model_call"] is not None else "",
             entry["errors"]] for name, entry in batching["variants"].items()]
    return [
        f"## Adaptive batching off and on ({measured(batching)})",
        "",
        f"Our server ({batching.get('layout', EARLIER_LAYOUT)}) started afresh per variant, v2 JSON, wrk"
        f" {batching['seconds_per_case']} s"
        f" per case, medians of {batching['rounds']} alternating round(s) (`python -m bench.batching_bench`);"
        " req/s / p99 ms; requests per model call from /metrics.",
        "",
        *table(["variant", *cases, "requests per model call", "errors"], rows),
        "",
    ]


PEER_CASES = (("A c1", "requests_per_second"), ("A c16", "requests_per_second"), ("B c1", "images_per_second"),
              ("B c4", "images_per_second"), ("C c1", "images_per_second"), ("C c4", "images_per_second"))


def peers_section(peers: dict[str, Any]) -> list[str]:
    servers = peers["servers"]
    rows = [[name, case, figures["requests_per_second"], figures["images_per_second"], figures["p50_ms"],
             figures["p99_ms"], figures["errors"]]
            for name, entry in servers.items() for case, figures in entry["cases"].items()]
    about = [[name, entry["what"], entry["start_to_ready_seconds"], entry["tree_pss_mib"],
              ", ".join(f"{p['name']} {p['rss_mib']}" for p in entry["rss_per_process_mib"]),
              ", ".join(f"{p['name']} {p['cpu_seconds']}" for p in entry["cpu_per_process"])]
             for name, entry in servers.items()]
    lines = [
        f"## Ours against other serving frameworks ({measured(peers)})",
        "",
        "The same model.onnx (ONNX Runtime 1 intra-op thread per process, 2 workers or instances each), the same"
        " bodies, every answer checked against in-process ONNX Runtime first; wrk on 127.0.0.1,"
        f" {peers['warmup_seconds']} s warm-up + {peers['seconds_per_case']} s per case, medians of"
        f" {peers['rounds']} round(s) alternating the"
        " order, each round starting every server afresh (`make bench-peers`; servers in `bench/peers/`)."
        " A = batch 1 v2 JSON, B = batch 256 v2 JSON, C = batch 256 binary (v2 binary tensor extension; ours also"
        " .npy on /predict); cN = N connections.",
        "",
        *table(["server", "case", "req/s", "images/s", "p50 ms", "p99 ms", "errors"], rows),
        "",
        *table(["server", "what", "start to ready s", "tree PSS MiB after load", "RSS MiB per process",
                "CPU s per process during the load"], about),
        "",
    ]
    if "ours" in servers and len(servers) > 1:
        lines += ours_versus_best(servers)
    return lines


def floor_section(floor: dict[str, Any], peers: dict[str, Any] | None) -> list[str]:
    """The model's own limit for batch-256 requests, and case C of each server set against it."""
    ceiling = floor["ceiling"]
    processes = max(ceiling, key=int)
    nodes = [[node["op"], node["node"], node["ms_per_batch"], f"{node['share']:.1%}",
              node["gflop_per_second"] or ""] for node in floor["nodes"] if node["share"] >= 0.005]
    lines = [
        f"## The model's floor: what no server can beat at batch 256 ({measured(floor)})",
        "",
        f"`python -m bench.model_floor`: 1 intra-op thread, slices of {floor['run_slice']} images. ONNX Runtime's"
        f" profiler over {floor['batch']}-image batches of the published graph run slice by slice (the kernels the"
        " server's Scan runs; nodes with 0.5 % of the time or more; GFLOP/s = 2 x multiply-adds per second, from"
        " the shapes it records):",
        "",
        *table(["op", "node", f"ms per {floor['batch']} images", "share", "GFLOP/s"], nodes),
        "",
        f"Model-only ceiling of the server's own model code, batches of {floor['batch']} back to back for"
        f" {floor['seconds_per_run']} s, medians of"
        f" {floor['rounds']} alternating round(s): 1 process {ceiling['1']['images_per_second']} images/s"
        f" (runs {ceiling['1']['runs']}); {processes} processes at once"
        f" {ceiling[processes]['images_per_second']} images/s (runs {ceiling[processes]['runs']}).",
        "",
    ]
    if peers:
        rows = []
        for case, limit in (("C c1", ceiling["1"]), ("C c4", ceiling[processes])):
            for name, entry in peers["servers"].items():
                for label, figures in entry["cases"].items():
                    if label.split(" .")[0] == case:
                        rows.append([label, name, figures["images_per_second"],
                                     f"{figures['images_per_second'] / limit['images_per_second']:.0%}"])
        lines += [f"Case C of the peers run ({measured(peers)}) as a share of that ceiling (C c1 against one"
                  f" process, C c4 against {processes}):", "",
                  *table(["case", "server", "images/s", "of the model-only ceiling"], rows), ""]
    return lines


def stability_section(check: dict[str, Any]) -> list[str]:
    return [f"Ours, {check['case']} {len(check['runs'])} times in a row against one start ({measured(check)};"
            f" {check['seconds_per_run']} s each, fresh connections each run, `python -m bench.stability_bench`): "
            + ", ".join(f"{run['requests_per_second']} req/s (p99 {run['p99_ms']} ms)" for run in check["runs"])
            + f"; spread (max - min) / max = {100 * check['spread']:.1f} % (want <= 10 %).", ""]


def ours_versus_best(servers: dict[str, Any]) -> list[str]:
    ours = servers["ours"]["cases"]
    rows = []
    for case, key in PEER_CASES:
        candidates = [(name, entry["cases"][case]) for name, entry in servers.items()
                      if name != "ours" and case in entry["cases"]]
        if not candidates:
            continue
        best_name, best = max(candidates, key=lambda item: item[1][key])
        mine, label = ours[case], "v2 binary" if case.startswith("C") else ""
        npy = ours.get(f"{case} .npy")
        if npy and npy[key] > mine[key]:
            mine, label = npy, ".npy"
        unit = "req/s" if key == "requests_per_second" else "images/s"
        rows.append([f"{case} ({unit})", f"{mine[key]} {label}".strip() + f" (p99 {mine['p99_ms']} ms)",
                     f"{best_name} {best[key]} (p99 {best['p99_ms']} ms)",
                     f"{mine[key] / best[key]:.2f}" if best[key] else "", f"{mine['p99_ms'] / best['p99_ms']:.2f}"
                     if best["p99_ms"] else ""])
    smallest = min((entry["tree_pss_mib"], name) for name, entry in servers.items() if name != "ours")
    fastest = min((entry["start_to_ready_seconds"], name) for name, entry in servers.items() if name != "ours")
    rows.append(["tree PSS after load, MiB", servers["ours"]["tree_pss_mib"], f"{smallest[1]} {smallest[0]}",
                 f"{servers['ours']['tree_pss_mib'] / smallest[0]:.2f}", ""])
    rows.append(["start to ready, s", servers["ours"]["start_to_ready_seconds"], f"{fastest[1]} {fastest[0]}",
                 f"{servers['ours']['start_to_ready_seconds'] / fastest[0]:.2f}" if fastest[0] else "", ""])
    return ["Ours against the best peer of each case (throughput ratio: want >= 1.1; p99 ratio: want <= 1):", "",
            *table(["case", "ours", "best peer", "ours / best", "p99 ours / best"], rows), ""]


def request_profile_section() -> list[str]:
    """bench/profile-request.txt (python -m bench.profile_request), with its flame graph beside it."""
    path = ROOT / "bench" / "profile-request.txt"
    if not path.is_file():
        return []
    title, *lines = path.read_text().splitlines()
    return [
        "## Where a batch-1 request goes (py-spy)",
        "",
        f"{title.lstrip('# ')}; flame graph `bench/profile-request.svg` (`python -m bench.profile_request`)."
        " Shares are of samples where the thread was not idle, so waits for the GIL or in a syscall count too.",
        "",
        "```",
        *[line for line in lines if line.strip()][:30],
        "```",
        "",
    ]


def http_section(http: dict[str, Any]) -> list[str]:
    rows = []
    for server in ("ours", "naive"):
        for case, figures in http[server]["cases"].items():
            rows.append([server, case, figures["requests_per_second"], figures["images_per_second"],
                         figures["p50_ms"], figures["p99_ms"], figures["errors"]])
    limits = http["in_process_onnx_batch256_images_per_second"]
    return [
        f"## HTTP under load: wrk on 127.0.0.1, {http['seconds_per_case']} s per case ({measured(http)})",
        "",
        "ours = gunicorn `server/gunicorn.conf.py` with docker-compose.yml's server settings"
        f" ({http.get('layout', EARLIER_LAYOUT)},"
        " ONNX Runtime 1 thread each); naive = `bench/naive_server.py` (Flask + Keras"
        " `model.predict` on `request.json`, one sync worker). cN = N connections.",
        "",
        *table(["server", "case", "req/s", "images/s", "p50 ms", "p99 ms", "errors"], rows),
        "",
        *table(["server", "start to ready s", "RSS per worker MiB"],
               [[server, http[server]["start_to_ready_seconds"], ", ".join(map(str, http[server]["worker_rss_mib"]))]
                for server in ("ours", "naive")]),
        "",
        "In-process ONNX Runtime at batch 256, measured just before and after the HTTP runs (images/s): "
        + "; ".join(f"{when}: " + ", ".join(f"{name} {value}" for name, value in figures.items())
                    for when, figures in limits.items())
        + f". The targets below use the best, {http['in_process_limit']}.",
        "",
    ]


def targets_section(training: dict[str, Any] | None, http: dict[str, Any] | None) -> list[str]:
    rows = []
    if training:
        rows.append(["training s/epoch, ours vs reference", f"{training['speedup']}x faster",
                     ">= 1x, final accuracy at most 0.002 below (seed noise)",
                     "met" if training["speedup"] >= 1 and training["accuracy_difference"] >= -0.002 else "missed", ""])
    profiles = []
    if http:
        for name, target in http["targets"].items():
            profile = target.get("profile")
            rows.append([name, target["ratio"], target["target"], "met" if target["met"] else "missed",
                         f"`{profile}`" if profile else ""])
            if profile and profile not in profiles:
                profiles.append(profile)
    lines = ["## Targets (ratios from this run)", "", *table(["target", "measured", "wanted", "", "profile"], rows),
             ""]
    for profile in profiles:
        text = (ROOT / profile).read_text().splitlines()
        # The frames under the route are where a request's time goes; the WSGI/thread frames above are 100%.
        interesting = [line for line in text if any(key in line for key in
                                                    ("predict", "Session.run", "request_pixels", "json", "loads",
                                                     "dumps", "npy", "astype", "instances", "make_response"))]
        lines += [f"Profile `{profile}` ({text[0].lstrip('# ')}), selected inclusive lines:", "", "```",
                  *interesting[:14], "```", ""]
    return lines


def write_report(epochs: int) -> dict[str, Any]:
    parts = {part: read_part(part) for part in PARTS + OPTIONAL_PARTS}
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "load_average": load_average(),
        "commands": {
            "all": f"make bench BENCH_EPOCHS={epochs} BENCH_ROUNDS={(parts['training'] or {}).get('rounds', 1)}"
                   f"   # = .venv/bin/python -m bench.run --epochs {epochs}",
            "training": f"BENCH_ROUNDS={(parts['training'] or {}).get('rounds', 1)}"
                        f" .venv/bin/python -m bench.train_bench {epochs}",
            "inference": ".venv/bin/python -m bench.inference_bench",
            "http": ".venv/bin/python -m bench.http_bench   # BENCH_HTTP_SECONDS=8 per case",
            "variants": ".venv/bin/python -m bench.run --only variants   # optional, about 12 minutes",
            "ort": "BENCH_ROUNDS=2 .venv/bin/python -m bench.run --only ort   # optional, about 3 minutes",
            "accept": ".venv/bin/python -m bench.run --only accept   # optional; BENCH_ACCEPT_RUNS=5 BENCH_SECONDS=4",
            "batching": ".venv/bin/python -m bench.run --only batching   # optional; BENCH_SECONDS=5 BENCH_ROUNDS=2",
            "profile": ".venv/bin/python -m bench.profile_request   # py-spy flame graph of batch 1 under load",
            "peers": "make bench-peers   # = bench.run --only peers,stability,floor; BENCH_SECONDS=10 BENCH_WARMUP=3"
                     " BENCH_ROUNDS=2",
            "stability": ".venv/bin/python -m bench.run --only stability   # ours, A c16 5 times; BENCH_SECONDS",
            "floor": ".venv/bin/python -m bench.run --only floor   # model-only ceiling; BENCH_FLOOR_SECONDS=8"
                     " BENCH_ROUNDS=3",
            "store": ".venv/bin/python -m bench.store_bench   # volume vs bucket; BENCH_STORE_ROUNDS=6",
            "recipes": ".venv/bin/python -m bench.run --only recipes   # optional, about 30 minutes;"
                       " BENCH_RECIPE_SEEDS=1,2,3 BENCH_RECIPE_BEFORE=<revision>",
        },
        **parts,
    }
    RESULTS_JSON.write_text(json.dumps(results, indent=2) + "\n")
    info = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`bench/run.py`); the raw figures are in `results.json`. The machine is shared"
        " with other work, so each figure is a median and each ratio compares runs made minutes apart in one"
        " `make bench`; the load average is recorded beside them.",
        "",
        *table(["", ""], [
            ["date", results["date"]],
            ["machine writing this report",
             f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Linux {info['kernel']}"],
            ["versions", ", ".join(f"{name} {version}" for name, version in results["versions"].items())],
            ["load average at the end (1/5/15 min)", results["load_average"]],
            *[[f"command ({name})", f"`{command}`"] for name, command in results["commands"].items()],
        ]),
        "",
        *headline(parts["training"], parts["http"]),
    ]
    if parts["training"]:
        lines += training_section(parts["training"])
    if parts["variants"]:
        lines += variants_section(parts["variants"])
    if parts["inference"]:
        lines += inference_section(parts["inference"])
    if parts["ort"]:
        lines += ort_section(parts["ort"])
    if parts["http"]:
        lines += http_section(parts["http"])
    lines += request_profile_section()
    if parts["accept"]:
        lines += accept_section(parts["accept"])
    if parts["batching"]:
        lines += batching_section(parts["batching"])
    if parts["peers"]:
        lines += peers_section(parts["peers"])
    if parts["stability"]:
        lines += stability_section(parts["stability"])
    if parts["floor"]:
        lines += floor_section(parts["floor"], parts["peers"])
    if parts["store"]:
        lines += store_section(parts["store"])
    if parts["recipes"]:
        lines += recipes_section(parts["recipes"])
    if parts["observability"]:
        lines += observability_section(parts["observability"])
    lines += targets_section(parts["training"], parts["http"])
    RESULTS_MD.write_text("\n".join(lines))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="training epochs for both sides (default 1)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(PARTS + OPTIONAL_PARTS)} (default: {', '.join(PARTS)})")
    args = parser.parse_args()
    parts = [part for part in args.only.split(",") if part]
    unknown = set(parts) - set(PARTS + OPTIONAL_PARTS)
    if unknown:
        parser.error(f"unknown parts {', '.join(sorted(unknown))}")
    TMP.mkdir(parents=True, exist_ok=True)
    run_parts(parts, args.epochs)
    write_report(args.epochs)
    print(f"bench: wrote {RESULTS_MD.relative_to(ROOT)} and {RESULTS_JSON.relative_to(ROOT)}")
    print(Path(RESULTS_MD).read_text())


if __name__ == "__main__":
    main()
