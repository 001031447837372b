"""`python -m trainer.export_onnx MODEL.keras`: ONNX export of a saved model under the TensorFlow backend.

A model trained under another Keras backend is exported here, in a process of its own (a process
has one Keras backend). Measured in issue 15 (Keras 3.15.1): Keras' own export from the JAX
backend (through jax2onnx 0.17.1) wrote a file that ONNX Runtime 1.32 refuses on the MaxPool
node ("Unsupported pooling size"), while the backend-neutral `.keras` file of a model trained on
a GPU under JAX, loaded here, exported through tf2onnx and agreed with Keras on all 10,000 test
digits (largest probability difference 6.6e-7).

`--check MNIST.npz` also runs the trainer's ONNX-vs-Keras quality gate on the test set and prints
the test accuracy: the CPU half of bench/gpu_check.sh, for a `.keras` file trained elsewhere.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from trainer import backend


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trainer.export_onnx", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="the saved .keras file")
    parser.add_argument("--onnx", type=Path, help="where to write the ONNX file (default: beside the model)")
    parser.add_argument("--check", type=Path, metavar="MNIST.npz",
                        help="run the ONNX-vs-Keras gate on this file's test set and print the test accuracy")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backend.select(backend.TENSORFLOW)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as trainer/__main__.py: no banner in the logs
    import keras
    import numpy as np

    from shared import dataset
    from shared.preprocess import scale_pixels
    from trainer.export import QualityGateError, check_onnx_agrees, export_onnx

    onnx_path = args.onnx or args.model.with_suffix(".onnx")
    try:
        # compile=False: the export and the check need the weights only, not the optimizer.
        model = keras.saving.load_model(args.model, compile=False)
    except (OSError, ValueError) as error:
        print(f"export_onnx: cannot load {args.model}: {error}", file=sys.stderr)
        return 1
    # Keras exports only a model that has run once (its input signature), and a loaded one has not.
    model(np.zeros((1, *model.input_shape[1:]), dtype="float32"))
    export_onnx(model, onnx_path)
    print(f"export_onnx: wrote {onnx_path} (Keras {keras.__version__}, TensorFlow backend)", flush=True)
    if args.check is None:
        return 0
    data = dataset.load(args.check)
    probabilities = model.predict(scale_pixels(data.x_test), batch_size=1000, verbose=0)
    accuracy = float((probabilities.argmax(axis=1) == data.y_test).mean())
    try:
        difference = check_onnx_agrees(onnx_path, data.x_test, probabilities)
    except QualityGateError as error:
        print(f"export_onnx: gate failed: {error}", file=sys.stderr)
        return 1
    print(f"export_onnx: test accuracy {accuracy:.4f} (Keras, TensorFlow backend); ONNX agrees on all"
          f" {len(data.x_test)} labels, largest probability difference {difference:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
