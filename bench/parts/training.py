"""Training, side by side: the reference notebook code against our trainer, same data and epochs.

Each side runs in its own process so peak RSS (ru_maxrss) and TensorFlow's thread pools
belong to it alone. "Ours" is the real `python -m trainer` path (`trainer.cli.run`), which
also publishes the model the inference and HTTP benchmarks use; its peak RSS is read the
moment `train()` returns, so the ONNX export afterwards does not count against it.

    python -m bench.parts.training [EPOCHS]      # both sides, writes bench/results/tmp/training.json
    BENCH_ROUNDS=3 python -m bench.parts.training 6  # alternate the sides 3 times; medians over all
    python -m bench.parts.training --ours EPOCHS  # one side (used by the line above)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from bench.common import (
    BENCH_HOME,
    bench_mnist,
    load_average,
    median,
    peak_rss_mib,
    run_json,
    write_part,
)
from bench.report import Parts, measured, render, table


def ours(epochs: int) -> dict[str, Any]:
    import keras

    import trainer.train
    from bench.epoch_clock import EpochClock
    from shared.config import Config
    from shared.model_store import ModelStore
    from trainer import cli

    measured: dict[str, Any] = {}
    real_train = trainer.train.train
    real_fit = keras.Model.fit
    clock = EpochClock()

    def clocked_fit(self: keras.Model, *args: Any, callbacks: list | None = None, **kwargs: Any) -> Any:
        # The reference's clock, added to train()'s own callbacks: both sides are timed alike.
        return real_fit(self, *args, callbacks=[*(callbacks or []), clock], **kwargs)

    def timed_train(*args: Any, **kwargs: Any) -> trainer.train.TrainingRun:
        run = real_train(*args, **kwargs)
        measured.update(history=run.history, train_images=run.train_images, peak_rss_mib=peak_rss_mib())
        return run

    # cli.run imports train() when it is called, so it picks up the timed wrapper.
    trainer.train.train = timed_train
    keras.Model.fit = clocked_fit
    mnist, mnist_sha256 = bench_mnist()
    config = Config.from_env(
        home=BENCH_HOME, dataset_url=str(mnist), dataset_sha256=mnist_sha256, epochs=epochs,
        min_accuracy=0.0,  # the benchmark reports accuracy; it does not gate on it
    )
    cli.run(config)
    store = ModelStore(config.model_base_path)
    metadata = store.metadata(store.latest())
    return {
        "epoch_seconds": clock.wall,
        "epoch_cpu_seconds": clock.cpu,
        "val_accuracy": [entry["val_accuracy"] for entry in measured["history"]],
        "test_accuracy": metadata["test_accuracy"],
        "train_images": measured["train_images"],
        "peak_rss_mib": measured["peak_rss_mib"],
        "model_version": metadata["version"],
        "precision": metadata["hyperparameters"]["precision"],
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's rounds -> medians over every epoch of every round (accuracy: per epoch, across rounds)."""
    seconds = [value for run in runs for value in run["epoch_seconds"]]
    cpu_seconds = [value for run in runs for value in run["epoch_cpu_seconds"]]
    per_epoch = median(seconds)
    return {
        **runs[-1],
        "epoch_seconds": seconds,
        "epoch_cpu_seconds": cpu_seconds,
        "val_accuracy": [round(median(epoch), 5)
                         for epoch in zip(*(run["val_accuracy"] for run in runs), strict=True)],
        "test_accuracy": round(median([run["test_accuracy"] for run in runs]), 5),
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        "median_epoch_seconds": round(per_epoch, 2),
        "median_epoch_cpu_seconds": round(median(cpu_seconds), 2),
        "samples_per_second": round(runs[-1]["train_images"] / per_epoch, 1),
        "load_before": "; ".join(run["load_before"] for run in runs),
        "rounds": runs,
    }


def main(epochs: int, rounds: int) -> dict[str, Any]:
    sides: dict[str, list[dict[str, Any]]] = {"reference": [], "ours": []}
    commands = [
        ("reference", ["-m", "bench.reference_train", str(epochs)]),
        ("ours", ["-m", "bench.parts.training", "--ours", str(epochs)]),
    ]
    for round_number in range(rounds):
        # A-B, then B-A: a machine that gets busier (or quieter) during the run hits both sides alike.
        for name, args in commands if round_number % 2 == 0 else commands[::-1]:
            load = load_average()
            print(f"bench: training {name}, {epochs} epoch(s), round {round_number + 1}/{rounds}, load {load}",
                  flush=True)
            sides[name].append({**run_json(args), "load_before": load})
    reference, mine = summarise(sides["reference"]), summarise(sides["ours"])
    result = {
        "epochs": epochs,
        "rounds": rounds,
        "reference": reference,
        "ours": mine,
        # > 1 means our trainer is faster per epoch than the reference.
        "speedup": round(reference["median_epoch_seconds"] / mine["median_epoch_seconds"], 3),
        # The same in CPU seconds: far less disturbed by other jobs on a shared machine.
        "cpu_speedup": round(reference["median_epoch_cpu_seconds"] / mine["median_epoch_cpu_seconds"], 3),
        "accuracy_difference": round(mine["val_accuracy"][-1] - reference["val_accuracy"][-1], 5),
        "load_after": load_average(),
    }
    write_part("training", result)
    return result


def section(training: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: each side's medians, and ours against the reference."""
    rows = [[side, entry["median_epoch_seconds"], entry.get("median_epoch_cpu_seconds", ""),
             entry["samples_per_second"], ", ".join(f"{value:.4f}" for value in entry["val_accuracy"]),
             entry["peak_rss_mib"], entry["load_before"]]
            for side, entry in ((side, training[side]) for side in ("reference", "ours"))]
    return render("training", epochs=training["epochs"], rounds=training.get("rounds", 1), measured=measured(training),
                  table=table(["side", "median s/epoch", "CPU s/epoch", "samples/s", "test accuracy per epoch",
                               "peak RSS MiB", "load before"], rows),
                  speedup=training["speedup"], cpu_speedup=training.get("cpu_speedup", "?"),
                  accuracy_difference=f"{training['accuracy_difference']:+.4f}",
                  precision=training["ours"].get("precision", "an unrecorded precision"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ours"]:
        print(json.dumps(ours(int(sys.argv[2]))))
    else:
        epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
        print(json.dumps(main(epochs, int(os.environ.get("BENCH_ROUNDS", "1")))))
