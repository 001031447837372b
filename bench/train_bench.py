"""Training, side by side: the reference notebook code against our trainer, same data and epochs.

Each side runs in its own process so peak RSS (ru_maxrss) and TensorFlow's thread pools
belong to it alone. "Ours" is the real `python -m trainer` path (`trainer.cli.run`), which
also publishes the model the inference and HTTP benchmarks use; its peak RSS is read the
moment `train()` returns, so the ONNX export afterwards does not count against it.

    python -m bench.train_bench [EPOCHS]      # both sides, writes bench/tmp/training.json
    python -m bench.train_bench --ours EPOCHS  # one side (used by the line above)
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.common import (
    BENCH_HOME,
    SHARED_MNIST,
    SHARED_MNIST_SHA256,
    load_average,
    median,
    peak_rss_mib,
    run_json,
    write_part,
)


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
    config = Config.from_env(
        home=BENCH_HOME, dataset_url=str(SHARED_MNIST), dataset_sha256=SHARED_MNIST_SHA256, epochs=epochs,
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


def summarise(raw: dict[str, Any], load: str) -> dict[str, Any]:
    per_epoch = median(raw["epoch_seconds"])
    return {
        **raw,
        "median_epoch_seconds": round(per_epoch, 2),
        "median_epoch_cpu_seconds": round(median(raw["epoch_cpu_seconds"]), 2),
        "samples_per_second": round(raw["train_images"] / per_epoch, 1),
        "load_before": load,
    }


def main(epochs: int) -> dict[str, Any]:
    sides = {}
    for name, args in (
        ("reference", ["-m", "bench.reference_train", str(epochs)]),
        ("ours", ["-m", "bench.train_bench", "--ours", str(epochs)]),
    ):
        load = load_average()
        print(f"bench: training {name}, {epochs} epoch(s), load {load}", flush=True)
        sides[name] = summarise(run_json(args), load)
    reference, mine = sides["reference"], sides["ours"]
    result = {
        "epochs": epochs,
        **sides,
        # > 1 means our trainer is faster per epoch than the reference.
        "speedup": round(reference["median_epoch_seconds"] / mine["median_epoch_seconds"], 3),
        # The same in CPU seconds: far less disturbed by other jobs on a shared machine.
        "cpu_speedup": round(reference["median_epoch_cpu_seconds"] / mine["median_epoch_cpu_seconds"], 3),
        "accuracy_difference": round(mine["val_accuracy"][-1] - reference["val_accuracy"][-1], 5),
        "load_after": load_average(),
    }
    write_part("training", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--ours"]:
        print(json.dumps(ours(int(sys.argv[2]))))
    else:
        print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)))
