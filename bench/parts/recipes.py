"""The two model recipes side by side (MODEL_RECIPE=seed|improved, issue 27), on this machine's CPU.

    python -m bench.parts.recipes            # BENCH_RECIPE_SEEDS (default 1,2,3) x both recipes -> recipes part
    python -m bench.run --only recipes       # the same, then regenerates bench/results.md

Each run is its own process (TensorFlow backend, TRAIN_PRECISION=auto, the defaults' epochs and
batch) running trainer/train.py's `train` and `evaluate` on all 60,000 images, then the ONNX
export and its quality gate, then the exported model under the server's own ONNX Runtime code
(server/backends.py, 1 thread) at batch 1 and 256. Runs alternate the recipes' order seed by
seed, so both meet the same load on a shared machine; the verdict compares median training CPU
seconds (user + system, all threads: what other load disturbs least), wall seconds where none.

`BENCH_RECIPE_IMPROVED_EPOCHS=N` also runs the improved recipe at N epochs in every round, a side
of its own held against the seed recipe's full run (`MODEL_RECIPE=improved EPOCHS=N`).

`BENCH_RECIPE_BEFORE=<git revision>` adds a third side, the seed recipe of that revision's
trainer (ragged last batches), for the fixed-shapes comparison (issue 27 part 1), on
BENCH_RECIPE_BEFORE_EPOCHS epochs (default 2) against the same number for ours
(BENCH_RECIPE_SUBSET=N: on the first N images).

Every finished run is also appended to bench/results/tmp/recipes-runs.jsonl, so a comparison cut short
keeps what it measured: `--collect` writes the part from those runs (timing both recipes' ONNX
models afresh when a run lacks it), adding `--shapes`' separate before/after result if present.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, TMP, bench_mnist, load_average, median, run_json, write_part
from bench.report import Parts, fragment, measured, render, table

TARGET_ACCURACY = 0.995
# Every finished run is appended here too: a long comparison cut short keeps what it measured.
RUNS_LOG = TMP / "recipes-runs.jsonl"
SHAPES_FILE = TMP / "recipes-shapes.json"  # `--shapes`' result, which `--collect` adds to the part
COST_FILE = TMP / "recipes-cost.json"  # `--cost`'s result, likewise
INFERENCE_REPEATS = {1: 300, 256: 30}
ONNX_ROUNDS = 4  # `--collect`'s ONNX timing afresh: rounds, the recipes' order alternating
# Also run the improved recipe at this many epochs, seed by seed (0: not): its time against the seed's full run.
SHORTER_EPOCHS = int(os.environ.get("BENCH_RECIPE_IMPROVED_EPOCHS", "0"))


def shorter_side(epochs: int) -> str:
    """The name of the improved recipe's side at fewer epochs than the seed recipe's."""
    return f"improved, {epochs} epochs"


def one(recipe: str, seed: int, epochs: int) -> dict[str, Any]:
    """Train, gate and time one recipe in this process; `recipe` "before" is an older trainer's seed."""
    if os.environ.get("BENCH_RECIPE_TREE"):  # that older trainer, ahead of this checkout's
        sys.path.insert(0, os.environ["BENCH_RECIPE_TREE"])
    from bench.compile_count import StepTraces
    from shared import dataset
    from shared.config import Config
    from trainer import backend, precision

    backend.select(backend.TENSORFLOW)
    import keras

    from trainer.export import check_onnx_agrees, export_onnx
    from trainer.train import evaluate, train

    defaults = Config()
    numerics = precision.resolve(defaults.precision)
    data = dataset.load(bench_mnist()[0])
    cpu_started = time.process_time()  # every thread of this process: what other load disturbs least
    with StepTraces() as traces:
        recipe_args = {} if recipe == "before" else {"recipe": recipe}
        run = train(data, epochs, defaults.batch_size, seed, int(os.environ.get("BENCH_RECIPE_SUBSET", "0")),
                    numerics, **recipe_args)
        cpu_seconds = time.process_time() - cpu_started
        scores = evaluate(run.model, data.x_test, data.y_test)
    result: dict[str, Any] = {
        "recipe": recipe, "seed": seed, "epochs": epochs, "precision": numerics, "keras": keras.__version__,
        "training_seconds": run.seconds, "training_cpu_seconds": round(cpu_seconds, 1),
        "epoch_seconds": [entry["seconds"] for entry in run.history],
        "test_accuracy": scores["test_accuracy"], "parameters": run.model.count_params(),
        "traces": traces.summary(),
        "load_average": load_average(),  # at the end of training: how busy the shared machine was
    }
    if recipe == "before":
        return result
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = Path(folder) / "model.onnx"
        export_onnx(run.model, onnx_path)
        result["onnx_max_probability_difference"] = check_onnx_agrees(onnx_path, data.x_test, scores["probabilities"])
        result["onnx_ms"] = onnx_milliseconds(onnx_path, data.x_test)
    return result


def onnx_milliseconds(onnx_path: Path, images: Any) -> dict[str, float]:
    """Median milliseconds per call of the server's ONNX Runtime model (1 thread) at batch 1 and 256."""
    from server.backends import OnnxModel
    from shared.preprocess import scale_pixels

    model = OnnxModel(onnx_path, threads=1)
    timings = {}
    for batch, repeats in INFERENCE_REPEATS.items():
        x = scale_pixels(images[:batch])
        model.predict(x)
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.predict(x)
            seconds.append(time.perf_counter() - started)
        timings[f"batch_{batch}"] = round(median(seconds) * 1000, 3)
    return timings


def before_tree(revision: str) -> Path:
    """trainer/ and shared/ of `revision`, unpacked into a temporary folder (bench/ stays this checkout's)."""
    folder = Path(tempfile.mkdtemp(prefix="recipes-before-"))
    archive = subprocess.run(["git", "archive", revision, "trainer", "shared"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def side_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [run["test_accuracy"] for run in runs]
    summary = {
        "runs": runs,
        "accuracy_per_seed": {str(run["seed"]): run["test_accuracy"] for run in runs},
        "cpu_seconds_per_seed": {str(run["seed"]): run["training_cpu_seconds"] for run in runs
                                 if "training_cpu_seconds" in run},
        "wall_seconds_per_seed": {str(run["seed"]): run["training_seconds"] for run in runs},
        "median_accuracy": median(accuracies),
        "median_training_seconds": median([run["training_seconds"] for run in runs]),
        "median_training_cpu_seconds": median([run["training_cpu_seconds"] for run in runs
                                               if "training_cpu_seconds" in run] or [0.0]),
        "first_epoch_median_seconds": median([run["epoch_seconds"][0] for run in runs]),
        "later_epochs_median_seconds": median([s for run in runs for s in run["epoch_seconds"][1:]] or [0.0]),
        "parameters": runs[0]["parameters"],
        "traces": next((run["traces"] for run in runs if "traces" in run), {}),
    }
    timed = [run["onnx_ms"] for run in runs if "onnx_ms" in run]  # "before" runs stop at training
    if timed:
        summary["onnx_ms"] = {key: median([entry[key] for entry in timed]) for key in timed[0]}
    return summary


def main() -> dict[str, Any]:
    from shared.config import RECIPES, Config

    seeds = [int(seed) for seed in os.environ.get("BENCH_RECIPE_SEEDS", "1,2,3").split(",")]
    epochs = Config().epochs
    runs: dict[str, list[dict[str, Any]]] = {recipe: [] for recipe in RECIPES}
    plan = [(recipe, epochs) for recipe in RECIPES] + ([("improved", SHORTER_EPOCHS)] if SHORTER_EPOCHS else [])
    for round_index, seed in enumerate(seeds):
        for recipe, recipe_epochs in plan if round_index % 2 == 0 else plan[::-1]:
            print(f"recipes_bench: {recipe}, seed {seed}, {recipe_epochs} epochs (load {load_average()})", flush=True)
            side = recipe if recipe_epochs == epochs else shorter_side(recipe_epochs)
            runs.setdefault(side, []).append(
                run_json(["-m", "bench.parts.recipes", "--one", recipe, str(seed), str(recipe_epochs)]))
    result = summarise(runs, epochs)
    revision = os.environ.get("BENCH_RECIPE_BEFORE")
    if revision:
        result["shapes"] = shapes_comparison(revision, int(os.environ.get("BENCH_RECIPE_BEFORE_EPOCHS", "2")))
    write_part("recipes", result)
    return result


def collect() -> dict[str, Any]:
    """The recipes part from the runs RUNS_LOG holds (a comparison cut short), written as `main` would."""
    from shared.config import RECIPES

    recorded = [json.loads(line) for line in RUNS_LOG.read_text().splitlines() if line.strip()]
    epochs = next(run["epochs"] for run in recorded if run["recipe"] == "seed")  # the seed recipe's: the reference
    runs = {recipe: [run for run in recorded if run["recipe"] == recipe and run["epochs"] == epochs]
            for recipe in RECIPES}
    for run in recorded:  # the improved recipe at fewer epochs
        if run["recipe"] == "improved" and run["epochs"] != epochs:
            runs.setdefault(shorter_side(run["epochs"]), []).append(run)
    result = summarise(runs, epochs)
    if any("onnx_ms" not in side for side in result["sides"].values()) or os.environ.get("BENCH_RECIPE_RETIME"):
        # Runs read back from logs have no ONNX figures, and timings taken while the machine was busy are
        # worth redoing (BENCH_RECIPE_RETIME=1) when it is not. Inference time depends on the architecture,
        # not the weights, so both recipes are timed afresh on models trained on a slice.
        retimed = onnx_retimed()
        for name, side in result["sides"].items():
            side["onnx_ms"] = retimed["seed" if name == "seed" else "improved"]
        result["onnx_timing"] = (f"models of each recipe trained on 512 images for 1 epoch, timed in {ONNX_ROUNDS}"
                                 " rounds alternating the recipes' order, medians (load average"
                                 f" {load_average()} at the end)")
    if SHAPES_FILE.is_file():
        result["shapes"] = json.loads(SHAPES_FILE.read_text())
    if COST_FILE.is_file():
        result["cost"] = json.loads(COST_FILE.read_text())
    write_part("recipes", result)
    return result


def onnx_retimed() -> dict[str, dict[str, float]]:
    """Median ONNX milliseconds per recipe over ONNX_ROUNDS rounds, the recipes' order alternating."""
    from shared.config import RECIPES

    timings: dict[str, list[dict[str, float]]] = {recipe: [] for recipe in RECIPES}
    for round_index in range(ONNX_ROUNDS):
        for recipe in RECIPES if round_index % 2 == 0 else RECIPES[::-1]:
            timed = run_json(["-m", "bench.parts.recipes", "--one", recipe, "1", "1"],
                             env={"BENCH_RECIPE_SUBSET": "512", "BENCH_RECIPE_NO_RECORD": "1"})
            timings[recipe].append(timed["onnx_ms"])
    return {recipe: {key: median([entry[key] for entry in entries]) for key in entries[0]}
            for recipe, entries in timings.items()}


def summarise(runs: dict[str, list[dict[str, Any]]], epochs: int) -> dict[str, Any]:
    sides = {recipe: side_summary(entries) for recipe, entries in runs.items()}
    seed_side, improved = sides["seed"], sides["improved"]
    result: dict[str, Any] = {
        "epochs": epochs, "seeds": sorted({run["seed"] for entries in runs.values() for run in entries}),
        "sides": sides,
        "time_ratio": round(improved["median_training_seconds"] / seed_side["median_training_seconds"], 3),
        "cpu_time_ratio": round(improved["median_training_cpu_seconds"] / seed_side["median_training_cpu_seconds"], 3)
        if seed_side["median_training_cpu_seconds"] else None,
        "target_accuracy": TARGET_ACCURACY,
        "load_average": load_average(),
    }
    result["time_ratio_per_seed"] = per_seed_ratios(seed_side["wall_seconds_per_seed"],
                                                    improved["wall_seconds_per_seed"])
    result["cpu_time_ratio_per_seed"] = per_seed_ratios(seed_side["cpu_seconds_per_seed"],
                                                        improved["cpu_seconds_per_seed"])
    # CPU seconds, where every run has them: what other load on a shared machine disturbs least.
    ratio = result["cpu_time_ratio"] or result["time_ratio"]
    result["met"] = ratio <= 1.0 and improved["median_accuracy"] >= TARGET_ACCURACY
    result["shorter"] = {name: against_seed(side, seed_side) for name, side in sides.items()
                         if name not in ("seed", "improved")}
    return result


def against_seed(side: dict[str, Any], seed_side: dict[str, Any]) -> dict[str, Any]:
    """The improved recipe at fewer epochs against the seed recipe's full run: both targets at once."""
    cpu_ratio = round(side["median_training_cpu_seconds"] / seed_side["median_training_cpu_seconds"], 3)
    return {"epochs": side["runs"][0]["epochs"], "seeds": len(side["runs"]), "cpu_time_ratio": cpu_ratio,
            "cpu_time_ratio_per_seed": per_seed_ratios(seed_side["cpu_seconds_per_seed"], side["cpu_seconds_per_seed"]),
            "median_accuracy": side["median_accuracy"],
            "met": cpu_ratio <= 1.0 and side["median_accuracy"] >= TARGET_ACCURACY}


def per_seed_ratios(seed_side: dict[str, float], improved: dict[str, float]) -> dict[str, float]:
    """Improved / seed for every seed both recipes ran."""
    return {seed: round(improved[seed] / seed_side[seed], 3) for seed in seed_side if seed in improved}


def shapes_comparison(revision: str, epochs: int) -> dict[str, Any]:
    """Seed recipe, seed 1: `revision`'s trainer (ragged batches) against ours (fixed shapes), alternating twice."""
    tree = before_tree(revision)
    env = {"BENCH_RECIPE_TREE": str(tree)}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    for round_index in range(2):
        for side in ("before", "after") if round_index == 0 else ("after", "before"):
            print(f"recipes_bench: shapes, {side} ({revision if side == 'before' else 'this checkout'}),"
                  f" {epochs} epochs (load {load_average()})", flush=True)
            args = ["-m", "bench.parts.recipes", "--one", "before" if side == "before" else "seed", "1", str(epochs)]
            runs[side].append(run_json(args, env=env if side == "before" else None))
    images = int(os.environ.get("BENCH_RECIPE_SUBSET", "0")) or 60000
    return {"revision": revision, "epochs": epochs, "train_images": images,
            **{side: side_summary(entries) for side, entries in runs.items()}}


def cost_comparison(rounds: int = 2, epochs: int = 2) -> dict[str, Any]:
    """CPU seconds of training, both recipes alternating, on BENCH_RECIPE_SUBSET images (default 12,000).

    CPU seconds (every thread of the process) are what other load on a shared machine disturbs least;
    the cost per image is the recipe's, so a slice measures it in minutes instead of an hour.
    """
    from shared.config import RECIPES

    images = os.environ.setdefault("BENCH_RECIPE_SUBSET", "12000")
    runs: dict[str, list[dict[str, Any]]] = {recipe: [] for recipe in RECIPES}
    for round_index in range(rounds):
        for recipe in RECIPES if round_index % 2 == 0 else RECIPES[::-1]:
            print(f"recipes_bench: cost, {recipe}, {epochs} epochs on {images} images (load {load_average()})",
                  flush=True)
            runs[recipe].append(run_json(["-m", "bench.parts.recipes", "--one", recipe, "1", str(epochs)],
                                         env={"BENCH_RECIPE_NO_RECORD": "1"}))
    cpu = {recipe: median([run["training_cpu_seconds"] for run in entries]) for recipe, entries in runs.items()}
    wall = {recipe: median([run["training_seconds"] for run in entries]) for recipe, entries in runs.items()}
    return {"train_images": int(images), "epochs": epochs, "rounds": rounds, "cpu_seconds": cpu, "wall_seconds": wall,
            "cpu_ratio": round(cpu["improved"] / cpu["seed"], 3),
            "wall_ratio": round(wall["improved"] / wall["seed"], 3),
            "cpu_seconds_per_run": {recipe: [run["training_cpu_seconds"] for run in entries]
                                    for recipe, entries in runs.items()}}


def section(part: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: accuracy, time and serving cost of both recipes, and the targets."""
    sides = part["sides"]
    cost = part.get("cost")
    accuracy_met = sides["improved"]["median_accuracy"] >= part["target_accuracy"]
    # CPU seconds are what a loaded machine disturbs least: the full runs' where measured, else a slice's.
    cpu_ratio = part.get("cpu_time_ratio")
    time_ratio = cpu_ratio or (cost["cpu_ratio"] if cost else part["time_ratio"])
    time_unit = " in CPU seconds" if cpu_ratio else " in CPU seconds on a slice, below" if cost else " in wall seconds"
    seed_ms, improved_ms = sides["seed"]["onnx_ms"], sides["improved"]["onnx_ms"]
    from_log = [f"{recipe} seed {run['seed']}" for recipe, side in sides.items() for run in side["runs"]
                if "source" in run]
    loads = [f"{recipe} {run['seed']}: {run['load_average']}" for recipe, side in sides.items()
             for run in side["runs"] if "load_average" in run]
    return render(
        "recipes", measured_at=part.get("measured_at", ""), table=recipe_table(sides), epochs=part["epochs"],
        time_ratio=f"{part['time_ratio']:.3f}",
        cpu_ratio=f" **{cpu_ratio:.3f}** in CPU seconds (per seed: {ratio_text(part.get('cpu_time_ratio_per_seed'))}),"
        if cpu_ratio else "",
        per_seed=ratio_text(part.get("time_ratio_per_seed")),
        target_accuracy=part["target_accuracy"], improved_runs=len(sides["improved"]["runs"]),
        accuracy_met="met" if accuracy_met else "not met",
        improved_accuracy=f"{sides['improved']['median_accuracy']:.4f}",
        time_met="met" if time_ratio <= 1 else "not met", time_compared=f"{time_ratio:.3f}{time_unit}",
        cost_1=f"{improved_ms['batch_1'] / seed_ms['batch_1']:.2f}",
        cost_256=f"{improved_ms['batch_256'] / seed_ms['batch_256']:.2f}",
        cost=fragment("recipes-cost", epochs=cost["epochs"], images=f"{cost['train_images']:,}", rounds=cost["rounds"],
                      seed=f"{cost['cpu_seconds']['seed']:.1f}", improved=f"{cost['cpu_seconds']['improved']:.1f}",
                      ratio=f"{cost['cpu_ratio']:.3f}", wall_ratio=f"{cost['wall_ratio']:.3f}") if cost else "",
        onnx_timing=f"ONNX timings: {part['onnx_timing']}." if part.get("onnx_timing") else "",
        from_log="Runs read back from their epoch log lines (started before runs were recorded one by one; no ONNX or"
                 f" CPU-time figures): {', '.join(from_log)}." if from_log else "",
        loads=f"Load average (1, 5, 15 minutes) at the end of each run's training, recipe and seed: {'; '.join(loads)}."
        if loads else "",
        conditions=part.get("conditions", ""), shorter=" ".join(shorter_text(part, name, figures)
                                                                  for name, figures in part.get("shorter", {}).items()),
        shapes=shapes_fragment(part["shapes"]) if part.get("shapes") else "")


def shorter_text(part: dict[str, Any], name: str, figures: dict[str, Any]) -> str:
    verdict = "met" if figures["met"] else "not met"
    return (f"The improved recipe at {figures['epochs']} epochs (`MODEL_RECIPE=improved EPOCHS={figures['epochs']}`,"
            f" row \"{name}\"): median accuracy {figures['median_accuracy']:.4f} over {figures['seeds']} seeds,"
            f" training CPU seconds x{figures['cpu_time_ratio']:.3f} the seed recipe's {part['epochs']} epochs"
            f" (per seed: {ratio_text(figures['cpu_time_ratio_per_seed'])}): both targets **{verdict}**.")


def ratio_text(ratios: dict[str, float] | None) -> str:
    return ", ".join(f"seed {seed}: {ratio:.3f}" for seed, ratio in (ratios or {}).items()) or "none"


def recipe_table(sides: dict[str, Any]) -> str:
    def per_seed(figures: dict[str, float], digits: int) -> str:
        return ", ".join(f"{seed}: {value:.{digits}f}" for seed, value in figures.items()) or "not recorded"

    return table(["recipe", "test accuracy per seed", "median", "training CPU s per seed", "median",
                  "training wall s per seed", "s/epoch first / later", "parameters", "ONNX ms batch 1",
                  "ONNX ms batch 256"], [
        [recipe, per_seed(side["accuracy_per_seed"], 4), f"{side['median_accuracy']:.4f}",
         per_seed(side.get("cpu_seconds_per_seed", {}), 1),
         f"{side['median_training_cpu_seconds']:.1f}" if side.get("cpu_seconds_per_seed") else "not recorded",
         per_seed(side.get("wall_seconds_per_seed", {}), 1),
         f"{side['first_epoch_median_seconds']:.1f} / {side['later_epochs_median_seconds']:.1f}",
         f"{side['parameters']:,}", f"{side['onnx_ms']['batch_1']:.3f}", f"{side['onnx_ms']['batch_256']:.2f}"]
        for recipe, side in sides.items()])


def shapes_fragment(shapes: dict[str, Any]) -> str:
    """Traced programs, wall and CPU seconds before and after the fixed-shapes change."""
    rows = [[name, ", ".join(f"{fn} {count}" for fn, count in side["traces"].items()),
             f"{side['first_epoch_median_seconds']:.1f}", f"{side['later_epochs_median_seconds']:.1f}",
             f"{side['median_training_seconds']:.1f}", f"{side['median_training_cpu_seconds']:.1f}",
             f"{side['median_accuracy']:.4f}"]
            for name, side in (("before", shapes["before"]), ("after", shapes["after"]))]
    return fragment("recipes-shapes", revision=shapes["revision"], epochs=shapes["epochs"],
                    images=f"{shapes.get('train_images', 60000):,}",
                    table=table(["side", "traced programs", "s/epoch first", "s/epoch later", "training s",
                                 "training CPU s", "test accuracy"], rows))

if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        measured = json.dumps(one(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        if not os.environ.get("BENCH_RECIPE_NO_RECORD"):
            TMP.mkdir(parents=True, exist_ok=True)
            with RUNS_LOG.open("a") as log:
                log.write(measured + "\n")
        print(measured, flush=True)
    elif sys.argv[1:] == ["--shapes"]:
        compared = shapes_comparison(os.environ["BENCH_RECIPE_BEFORE"],
                                     int(os.environ.get("BENCH_RECIPE_BEFORE_EPOCHS", "2")))
        SHAPES_FILE.write_text(json.dumps(compared, indent=2))
        print(json.dumps(compared), flush=True)
    elif sys.argv[1:] == ["--cost"]:
        measured_cost = cost_comparison()
        COST_FILE.write_text(json.dumps(measured_cost, indent=2))
        print(json.dumps(measured_cost), flush=True)
    elif sys.argv[1:] == ["--collect"]:
        print(json.dumps(collect()), flush=True)
    else:
        print(json.dumps(main()), flush=True)
