"""Training speed-ups we tried on our trainer's path, each against the unchanged one.

Every variant keeps the reference model, optimizer, batch 128 and data; it changes only how
the data is fed, how TensorFlow schedules threads, or the precision the layers compute in.
Variants run in their own processes, in alternation (round robin, ROUNDS times) so a busy
spell on the shared machine hits them all alike, on the first SUBSET images for 2 epochs;
the second epoch is the figure (the first includes tracing). Not part of the default
`make bench` (about 12 minutes):

    python -m bench.run --only variants     # or: python -m bench.parts.variants
    python -m bench.parts.variants --profile  # only the oneDNN kernel profiles, added to the last run
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from typing import Any

from bench.common import PROFILES, ROOT, bench_mnist, load_average, median, read_part, run_json, write_part
from bench.report import Parts, code, fragment, measured, render, table

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

    with np.load(bench_mnist()[0]) as archive:
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
    return {"wall": clock.wall[-1], "cpu": clock.cpu[-1], "fit_wall": sum(clock.wall),
            "val_accuracy": history.history["val_accuracy"][-1]}


def kernel_profile(variant: str) -> str | None:
    """One run of `variant` with oneDNN's execution log: where the time goes, kernel by kernel.

    TensorFlow runs this model's convolutions, dense layers and pooling as oneDNN primitives;
    ONEDNN_VERBOSE=profile_exec logs each execution with its implementation (the instruction set
    it uses, e.g. avx512_core_amx) and milliseconds. A sampling profiler cannot show this: py-spy
    --native stops the process for every sample and slowed this run about 20x.
    """
    environment = {**os.environ, **VARIANT_ENVIRONMENT.get(variant, {}), "ONEDNN_VERBOSE": "profile_exec"}
    completed = subprocess.run([sys.executable, "-m", "bench.parts.variants", "--child", variant], cwd=ROOT,
                               env=environment, capture_output=True, text=True)
    milliseconds: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for line in completed.stdout.splitlines():
        fields = line.split(",")
        if not line.startswith("onednn_verbose") or "exec" not in fields:
            continue
        at = fields.index("exec")
        kernel = f"{fields[at + 2]} {fields[at + 4]} ({fields[at + 3]})"  # primitive, direction (implementation)
        milliseconds[kernel] += float(fields[-1])
        calls[kernel] += 1
    if completed.returncode != 0 or not milliseconds:
        print(f"bench: no oneDNN execution log for {variant}: {completed.stderr.strip()[-300:]}", flush=True)
        return None
    fit_seconds = json.loads(completed.stdout.splitlines()[-1])["fit_wall"]
    total = sum(milliseconds.values())
    lines = [f"# oneDNN kernels, training variant {variant}, {SUBSET:,} images x {EPOCHS} epochs with validation:"
             f" {total / 1000:.1f} s in oneDNN of {fit_seconds:.1f} s of fit (logging slows it)", "",
             "share   seconds    calls  kernel"]
    lines += [f"{100 * ms / total:5.1f}%  {ms / 1000:7.2f}  {calls[kernel]:7d}  {kernel}"
              for kernel, ms in milliseconds.most_common(12)]
    summary = PROFILES / f"profile-training-{variant}.txt"
    summary.write_text("\n".join(lines) + "\n")
    return str(summary.relative_to(ROOT))


def main() -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in VARIANTS}
    for round_number in range(ROUNDS):
        for name in VARIANTS:
            print(f"bench: variant {name}, round {round_number + 1}/{ROUNDS}, load {load_average()}", flush=True)
            runs[name].append(run_json(["-m", "bench.parts.variants", "--child", name], VARIANT_ENVIRONMENT.get(name)))
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
    result = {"subset": SUBSET, "epochs": EPOCHS, "rounds": ROUNDS, "variants": summary,
              "load_after": load_average(), "profiles": profiles()}
    write_part("variants", result)
    return result


def profiles() -> dict[str, str | None]:
    found = {}
    for name in PROFILED:
        print(f"bench: oneDNN kernel profile of variant {name}, load {load_average()}", flush=True)
        found[name] = kernel_profile(name)
    return found


def add_profiles() -> dict[str, Any]:
    """Profile again and add the result to the last variants run (`--profile`)."""
    result = read_part("variants")
    if result is None:
        raise SystemExit("bench: no variants run to add profiles to; run python -m bench.parts.variants first")
    result["profiles"] = profiles()
    write_part("variants", result)  # keeps the variants' own measured_at
    return result


def section(variants: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: each variant against the base, then the oneDNN kernel profiles."""
    rows = [[name, entry["what"], round(entry["median_epoch_seconds"], 2), round(entry["median_epoch_cpu_seconds"], 2),
             entry["cpu_vs_base"], f"{entry['val_accuracy']:.4f}"] for name, entry in variants["variants"].items()]
    return render("variants", measured=measured(variants), subset=f"{variants['subset']:,}",
                  epochs=variants["epochs"], rounds=variants["rounds"],
                  table=table(["variant", "what changes", "wall s/epoch", "CPU s/epoch", "CPU vs base",
                               "test accuracy"], rows),
                  profiles="\n\n".join(training_profile(path) for path in variants.get("profiles", {}).values()
                                       if path))


def training_profile(path: str) -> str:
    """One profiled variant's oneDNN kernel table (bench/results/profiles/profile-training-*.txt), as written."""
    title, _, kernels = (ROOT / path).read_text().partition("\n\n")
    return fragment("profile-listing", path=path, title=title.lstrip("# "), listing=code([kernels.rstrip()]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2])))
    elif sys.argv[1:2] == ["--profile"]:
        print(json.dumps(add_profiles()))
    else:
        print(json.dumps(main()))
