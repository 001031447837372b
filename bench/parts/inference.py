"""In-process inference: the physical limit the HTTP server is measured against.

Loads the model `bench.parts.training` published and times only the model call (input already
scaled to the model's float32 convention) for batch 1, 32, 256 and 1000, with every
runtime we considered. Each runtime is also run over all 10,000 test digits and compared
with Keras' `model.predict`: the rate of agreeing argmax and the largest probability gap.

    python -m bench.parts.inference   # writes bench/results/tmp/inference.json
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import TMP, bench_mnist, load_average, median, write_part
from bench.lib.ours import published
from bench.report import Parts, measured, render, table

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH_SIZES = (1, 32, 256, 1000)
SECONDS_PER_CASE = 2.0  # each (runtime, batch) case runs at least this long, or MAX_REPEATS calls
MIN_REPEATS, MAX_REPEATS = 5, 2000
AGREEMENT_CHUNK = 1000

Runner = Callable[[np.ndarray], np.ndarray]


def time_calls(run: Runner, batch: np.ndarray) -> list[float]:
    run(batch)  # warm-up: first calls trace, allocate, pick kernels
    run(batch)
    seconds: list[float] = []
    deadline = time.perf_counter() + SECONDS_PER_CASE
    while len(seconds) < MIN_REPEATS or (time.perf_counter() < deadline and len(seconds) < MAX_REPEATS):
        started = time.perf_counter()
        run(batch)
        seconds.append(time.perf_counter() - started)
    return seconds


def keras_runners(model_path: Path) -> dict[str, Runner]:
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(str(model_path), compile=False)
    graph = tf.function(
        lambda x: model(x, training=False),
        input_signature=[tf.TensorSpec([None, 28, 28, 1], tf.float32)],  # one trace serves every batch size
    )
    return {
        "keras model.predict": lambda x: model.predict(x, batch_size=len(x), verbose=0),
        "keras model(x)": lambda x: np.asarray(model(x, training=False)),
        "tf.function": lambda x: graph(x).numpy(),
    }


def onnx_runners(onnx_path: Path) -> dict[str, Runner]:
    from server.backends import OnnxModel

    # The server's own class and settings (INFERENCE_THREADS=1 per worker, 2 workers by default);
    # the 2-thread session is what one process can get from the whole machine.
    return {
        "onnxruntime (server, 1 thread)": OnnxModel(onnx_path, threads=1).predict,
        "onnxruntime (2 threads)": OnnxModel(onnx_path, threads=2).predict,
    }


def litert_runner(model_path: Path) -> dict[str, Runner]:
    """LiteRT (ex TFLite) from Keras' own exporter; skipped with a note when it is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return {}
    import keras

    tflite_path = TMP / "model.tflite"
    keras.saving.load_model(str(model_path), compile=False).export(str(tflite_path), format="litert", verbose=False)
    interpreter = Interpreter(model_path=str(tflite_path), num_threads=1)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    shape = [0]

    def run(x: np.ndarray) -> np.ndarray:
        if shape[0] != len(x):  # the interpreter has fixed shapes: resize once per batch size
            interpreter.resize_tensor_input(input_index, list(x.shape))
            interpreter.allocate_tensors()
            shape[0] = len(x)
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return {"litert (1 thread)": run}


def in_chunks(run: Runner, x: np.ndarray) -> np.ndarray:
    return np.concatenate([run(x[start: start + AGREEMENT_CHUNK]) for start in range(0, len(x), AGREEMENT_CHUNK)])


def main() -> dict[str, Any]:
    from shared.model_store import KERAS_FILE, ONNX_FILE
    from shared.preprocess import scale_pixels

    version_dir = published().parent
    with np.load(bench_mnist()[0]) as archive:
        x_test = scale_pixels(archive["x_test"])
    runners = {
        **keras_runners(version_dir / KERAS_FILE),
        **onnx_runners(version_dir / ONNX_FILE),
        **litert_runner(version_dir / KERAS_FILE),
    }
    reference = in_chunks(runners["keras model.predict"], x_test)
    results: dict[str, Any] = {}
    for name, run in runners.items():
        probabilities = in_chunks(run, x_test)
        entry: dict[str, Any] = {
            "argmax_agreement": float((probabilities.argmax(1) == reference.argmax(1)).mean()),
            "max_probability_difference": float(np.abs(probabilities - reference).max()),
            "batches": {},
        }
        for size in BATCH_SIZES:
            seconds = time_calls(run, x_test[:size])
            latency = median(seconds)
            entry["batches"][str(size)] = {
                "latency_ms": round(latency * 1000, 3),
                "images_per_second": round(size / latency, 1),
                "calls": len(seconds),
            }
            print(f"bench: {name:32s} batch {size:4d}: {latency * 1000:9.3f} ms, {size / latency:9.1f} images/s",
                  flush=True)
        results[name] = entry
    result = {"model_version": int(version_dir.name), "runtimes": results, "load_after": load_average()}
    write_part("inference", result)
    return result


def section(inference: dict[str, Any], parts: Parts) -> list[str]:
    """bench/results.md's section: latency and rate per runtime and batch, and agreement with Keras."""
    rows = [[name, *(f"{entry['batches'][size]['latency_ms']} / {entry['batches'][size]['images_per_second']:.0f}"
                     for size in ("1", "32", "256", "1000")),
             f"{entry['argmax_agreement']:.4f}", f"{entry['max_probability_difference']:.1e}"]
            for name, entry in inference["runtimes"].items()]
    return render("inference", measured=measured(inference),
                  table=table(["runtime", "batch 1", "batch 32", "batch 256", "batch 1000", "argmax agreement",
                               "max prob diff"], rows))


if __name__ == "__main__":
    print(json.dumps(main()))
