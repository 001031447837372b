"""Seconds per epoch of the trainer's own `train` under each Keras backend on this CPU (issue 15).

`python -m bench.backend_cpu [--images 4000] [--epochs 2] [--rounds 2]` runs one process per
backend and round (a process has one Keras backend), alternating tensorflow and jax, and prints
wall and CPU seconds per epoch. JAX runs twice per round, with an empty then with the warm
compilation cache, to show what the cache saves in the first epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, bench_mnist

CHILD = """
import json, sys, time
from trainer import backend
backend.select(sys.argv[1], __import__("pathlib").Path(sys.argv[4]))
import keras
from shared import dataset
from trainer.train import train

class Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.cpu = []
    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.process_time()
    def on_epoch_end(self, epoch, logs=None):
        self.cpu.append(round(time.process_time() - self.started, 2))

clock = Clock()
import trainer.train as t
original = t.EpochTimer
class Timed(original):
    def on_epoch_begin(self, epoch, logs=None):
        clock.on_epoch_begin(epoch, logs)
        super().on_epoch_begin(epoch, logs)
    def on_epoch_end(self, epoch, logs=None):
        clock.on_epoch_end(epoch, logs)
        super().on_epoch_end(epoch, logs)
t.EpochTimer = Timed
data = dataset.load(sys.argv[5])
run = train(data, int(sys.argv[3]), 128, 1337, int(sys.argv[2]))
print(json.dumps({"wall": [e["seconds"] for e in run.history], "cpu": clock.cpu,
                  "val_accuracy": run.history[-1]["val_accuracy"]}))
"""


def one(name: str, images: int, epochs: int, cache: Path, mnist: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", CHILD, name, str(images), str(epochs), str(cache), str(mnist)],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mnist", type=Path, default=None, help="default: MNIST_NPZ, else the Keras file (cached)")
    args = parser.parse_args()
    mnist = args.mnist or bench_mnist()[0]
    for round_ in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory() as cache:
            for name, label in (("tensorflow", "tensorflow"), ("jax", "jax, cold cache"), ("jax", "jax, warm cache")):
                started = time.perf_counter()
                figures = one(name, args.images, args.epochs, Path(cache), mnist)
                print(f"round {round_} {label}: wall s/epoch {figures['wall']}, CPU s/epoch {figures['cpu']},"
                      f" val_accuracy {figures['val_accuracy']:.4f}, process {time.perf_counter() - started:.1f} s",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
