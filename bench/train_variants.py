"""Training speed-ups we tried on our trainer's path, each against the unchanged one.

Every variant keeps the reference model, optimizer, batch 128 and data; it changes only how
the data is fed, how TensorFlow schedules threads, or the precision the layers compute in.
Variants run in their own processes, in alternation (round robin, ROUNDS times) so a busy
spell on the shared machine hits them all alike, on the first SUBSET images for 2 epochs;
the second epoch is the figure (the first includes tracing). Not part of the default
`make bench` (about 12 minutes):

    python -m bench.run --only variants     # or: python -m bench.train_variants
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench.common import ROOT, SHARED_MNIST, TMP, load_average, median, py_spy, run_json, summarise_profile, write_part

SUBSET = 12800
EPOCHS = 2
ROUNDS = 2
VARIANTS = {
    "base": "float32, the reference's feeding: model.fit on float32 NumPy arrays (Keras' gather pipeline),"
            " 1 step per call",
    "threads": "TensorFlow intra-op 2 threads, inter-op 1 (default: 2 and 2 on 2 cores)",
    "steps_per_execution": "16 training steps per tf.function call instead of 1 (less Python per step)",
    "validation_batch": "validation_batch_size 1000 instead of 128",
    "uint8_dataset": "tf.data from uint8 arrays, cast and /255 per batch in the pipeline",
    "onednn_bf16_fpmath": "float32 model, oneDNN allowed to compute float32 convolutions in bfloat16"
                          " (ONEDNN_DEFAULT_FPMATH_MODE=BF16)",
    "mixed_bfloat16": "Keras mixed_bfloat16 policy, float32 weights and output layer"
                      " (what TRAIN_PRECISION=auto picks on an AMX CPU)",
    "mixed_bfloat16_no_amx": "the same with oneDNN kept off AMX (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16),"
                             " as on a CPU with AVX-512 BF16 but no AMX",
}
PROFILED = ("base", "mixed_bfloat16")  # where the time goes, native frames included, once each
# Variants that differ only in how oneDNN may compute: set for their child process alone.
VARIANT_ENVIRONMENT = {
    "onednn_bf16_fpmath": {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"},
    "mixed_bfloat16_no_amx": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
}


def child(variant: str) -> dict[str, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if variant == "threads":  # only possible before TensorFlow's first op
        tf.config.threading.set_intra_op_parallelism_threads(2)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    from bench.epoch_clock import EpochClock
    from shared.preprocess import scale_pixels
    from trainer.model import build_model

    with np.load(SHARED_MNIST) as archive:
        x_train, y_train = archive["x_train"][:SUBSET], archive["y_train"][:SUBSET]
        x_test, y_test = archive["x_test"], archive["y_test"]
    keras.utils.set_random_seed(1337)
    model = build_model("mixed_bfloat16" if variant.startswith("mixed_bfloat16") else "float32")
    if variant == "steps_per_execution":
        model.steps_per_execution = 16  # what compile(steps_per_execution=16) sets; the model stays the reference's
    clock = EpochClock()
    options: dict[str, Any] = {"epochs": EPOCHS, "verbose": 0, "callbacks": [clock],
                               "validation_data": (scale_pixels(x_test), keras.utils.to_categorical(y_test, 10))}
    if variant == "validation_batch":
        options["validation_batch_size"] = 1000
    if variant == "uint8_dataset":
        data = (tf.data.Dataset.from_tensor_slices((x_train, y_train)).shuffle(len(x_train), seed=1337).batch(128)
                .map(lambda x, y: (tf.cast(x, tf.float32)[..., None] / 255.0, tf.one_hot(tf.cast(y, tf.int32), 10)),
                     num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))
        history = model.fit(data, **options)
    else:
        history = model.fit(scale_pixels(x_train), keras.utils.to_categorical(y_train, 10), batch_size=128, **options)
    return {"wall": clock.wall[-1], "cpu": clock.cpu[-1], "val_accuracy": history.history["val_accuracy"][-1]}


def profile(variant: str) -> str | None:
    """One run of `variant` under py-spy (native frames: TensorFlow's kernels); the top functions."""
    spy = py_spy()
    if spy is None:
        return None
    raw = TMP / f"profile-training-{variant}.raw"
    command = [spy, "record", "--native", "--format", "raw", "--output", str(raw), "--",
               sys.executable, "-m", "bench.train_variants", "--child", variant]
    completed = subprocess.run(command, cwd=ROOT, env={**os.environ, **VARIANT_ENVIRONMENT.get(variant, {})},
                               capture_output=True, text=True)
    if completed.returncode != 0 or not raw.is_file():
        print(f"bench: py-spy could not profile {variant}: {completed.stderr.strip()[-300:]}", flush=True)
        return None
    summary = ROOT / "bench" / f"profile-training-{variant}.txt"
    summary.write_text(summarise_profile(raw.read_text(), f"py-spy --native, training variant {variant}, "
                                                          f"{SUBSET:,} images x {EPOCHS} epochs"))
    return str(summary.relative_to(ROOT))


def main() -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for round_number in range(ROUNDS):
        for name in VARIANTS:
            print(f"bench: variant {name}, round {round_number + 1}/{ROUNDS}, load {load_average()}", flush=True)
            runs[name].append(run_json(["-m", "bench.train_variants", "--child", name], VARIANT_ENVIRONMENT.get(name)))
    base_cpu = median([run["cpu"] for run in runs["base"]])
    summary = {
        name: {
            "what": VARIANTS[name],
            "median_epoch_seconds": median([run["wall"] for run in runs[name]]),
            "median_epoch_cpu_seconds": median([run["cpu"] for run in runs[name]]),
            "cpu_vs_base": round(median([run["cpu"] for run in runs[name]]) / base_cpu, 3),
            "val_accuracy": runs[name][-1]["val_accuracy"],
            "runs": runs[name],
        }
        for name in VARIANTS
    }
    profiles = {}
    for name in PROFILED:
        print(f"bench: profiling variant {name}, load {load_average()}", flush=True)
        profiles[name] = profile(name)
    result = {"subset": SUBSET, "epochs": EPOCHS, "rounds": ROUNDS, "variants": summary, "profiles": profiles,
              "load_after": load_average()}
    write_part("variants", result)
    return result


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2])))
    else:
        print(json.dumps(main()))
