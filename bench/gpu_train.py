"""The GPU half of bench/gpu_check.sh: the project's own training on the Keras JAX backend.

`python -m bench.gpu_train --mnist mnist.npz --out DIR [--epochs 6] [--train-subset N] [--recipe seed|improved]
[--label NAME] [--cache DIR]`

Runs trainer/train.py's `train` and `evaluate` (the same code, model and defaults as
`python -m trainer`) without TensorFlow: a bare GPU host has JAX and ONNX Runtime only, so the
ONNX export and its gate run afterwards on a CPU machine (`python -m trainer.export_onnx
DIR/model.keras --check mnist.npz`). Prints seconds per epoch, the total and the test accuracy,
the XLA compilations (count, seconds, the longest, persistent-cache hits) and the Keras step programs
traced, and writes them to DIR/result-NAME.json beside DIR/model.keras. JAX's compilation cache is
DIR/jax-cache (or --cache), as the trainer's is on its volume: a second run shows what the cache saves.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from shared.config import PRECISIONS, RECIPES, Config
from trainer import backend

DEFAULTS = Config()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_train", description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, required=True, help="the mnist.npz file")
    parser.add_argument("--out", type=Path, required=True, help="folder for model.keras, result.json, jax-cache/")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    parser.add_argument("--train-subset", type=int, default=DEFAULTS.train_subset, help="0 = all 60,000")
    parser.add_argument("--precision", default=DEFAULTS.precision, choices=PRECISIONS, help="as TRAIN_PRECISION")
    parser.add_argument("--recipe", default=DEFAULTS.recipe, choices=RECIPES, help="as MODEL_RECIPE")
    parser.add_argument("--label", default="", help="names the result file: result-LABEL.json")
    parser.add_argument("--cache", type=Path, default=None, help="JAX compilation cache folder (OUT/jax-cache)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    backend.select(backend.JAX, args.cache or args.out / "jax-cache")
    started = time.perf_counter()
    from bench.compile_count import JaxCompiles, StepTraces
    from shared import dataset
    from trainer import precision
    from trainer.cli import library_versions
    from trainer.train import evaluate, train

    device = backend.training_device()
    gpu_capability = (device.compute_capability or (0, 0)) if device.kind == "gpu" else None
    numerics = precision.resolve(args.precision, gpu_capability=gpu_capability)
    data = dataset.load(args.mnist)
    print(f"gpu_train: {device}, {numerics}, {args.recipe} recipe, {args.epochs} epochs on"
          f" {args.train_subset or len(data.x_train)} images", flush=True)
    compiles = JaxCompiles().start()
    with StepTraces() as traces:
        run = train(data, args.epochs, DEFAULTS.batch_size, DEFAULTS.seed, args.train_subset, numerics,
                    recipe=args.recipe)
        training_compiles = compiles.summary()
        scores = evaluate(run.model, data.x_test, data.y_test)
    scores.pop("probabilities")
    run.model.save(args.out / "model.keras")
    seconds = [entry["seconds"] for entry in run.history]
    result = {
        "label": args.label,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "device": str(device),
        "recipe": args.recipe,
        "precision": numerics,
        "epochs": args.epochs,
        "train_images": run.train_images,
        "epoch_seconds": seconds,
        "first_epoch_seconds": seconds[0],
        "later_epochs_median_seconds": statistics.median(seconds[1:]) if len(seconds) > 1 else None,
        "training_seconds": run.seconds,
        "test_accuracy": scores["test_accuracy"],
        "test_loss": scores["test_loss"],
        "parameters": run.model.count_params(),
        "compiles_during_training": training_compiles,
        "compiles_with_evaluation": compiles.summary(),
        "step_traces": traces.summary(),
        "process_seconds": round(time.perf_counter() - started, 2),
        "libraries": library_versions(),
    }
    result_file = args.out / f"result{'-' + args.label if args.label else ''}.json"
    result_file.write_text(json.dumps(result, indent=2))
    later = result["later_epochs_median_seconds"]
    print(f"gpu_train: s/epoch {' '.join(f'{s:.2f}' for s in seconds)} (first {seconds[0]:.2f},"
          f" later median {later if later is None else f'{later:.2f}'}); training {run.seconds:.2f} s;"
          f" test accuracy {scores['test_accuracy']:.4f}; XLA compiles in training"
          f" {training_compiles['xla_compiles']} ({training_compiles['xla_compile_seconds']:.1f} s, longest"
          f" {training_compiles['longest_compiles_seconds']}), cache hits {training_compiles['cache_hits']};"
          f" step traces {traces.summary()}; saved {args.out / 'model.keras'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
