#!/usr/bin/env bash
# GPU check (issue 15): the project's own training on a GPU host's JAX, for the README's GPU figures.
#
# For a bare GPU host with Python (3.12), JAX with CUDA and ONNX Runtime, but no TensorFlow and no
# internet. Copy there: this repository (git archive), mnist.npz and a wheel folder made by
# bench/gpu_wheels.sh on a machine with PyPI access. Then:
#   bench/gpu_check.sh WHEELS_DIR MNIST_NPZ [OUT_DIR]
# It puts the wheels the host's Python lacks into OUT_DIR/site (the host's environment is left as
# it was, and its JAX and ONNX Runtime are used) and trains the default run (6
# epochs, 60,000 images, batch 128) on the Keras JAX backend with trainer/train.py, once per entry of
# GPU_CHECK_PLAN (default "seed:cold seed:warm improved:cold improved:warm"): RECIPE:cold empties the
# compile cache OUT_DIR/jax-cache first (a fresh GPU node), RECIPE:warm reuses it (a retrain on the
# volume); a third field sets XLA_FLAGS (commas for spaces) for that run, with a cache of its own. Each
# run prints s/epoch, the total, the test accuracy and the XLA compilations, and leaves
# OUT_DIR/model.keras and OUT_DIR/result-N-RECIPE-cold|warm.json; a table of all runs ends the output.
# The ONNX export and its quality gate need TensorFlow, so they run afterwards on any CPU machine
# with the project's .venv (the command is printed at the end).
# Quick try on a CPU: GPU_CHECK_EPOCHS=1 GPU_CHECK_SUBSET=2000 GPU_CHECK_PLAN=seed:cold. GPU_CHECK_PRECISION=float32
# compares with issue 15's float32 figures.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d'
    exit 2
fi
wheels=$(realpath "$1")
mnist=$(realpath "$2")
out=$(realpath -m "${3:-gpu-check}")
python=${PYTHON:-python3}
epochs=${GPU_CHECK_EPOCHS:-6}
subset=${GPU_CHECK_SUBSET:-0}
plan=${GPU_CHECK_PLAN:-seed:cold seed:warm improved:cold improved:warm}
precision=${GPU_CHECK_PRECISION:-auto}  # as TRAIN_PRECISION: auto is mixed bfloat16 on an H200
cd "$(dirname "$0")/.."
mkdir -p "$out"

# Only the distributions the host lacks, each without its dependencies (those are in the folder
# too, or already on the host): nothing on the host is shadowed. pip when the host has it, else the
# wheels are unpacked as they are (a wheel is a zip of its site-packages files).
site=$out/site
export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}  # so a second call finds what the first installed
mapfile -t missing < <("$python" - "$wheels" <<'PY'
import importlib.metadata, pathlib, sys
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    try:
        importlib.metadata.version(wheel.name.split("-")[0])
    except importlib.metadata.PackageNotFoundError:
        print(wheel)
PY
)
echo "gpu_check: installing into $site: ${missing[*]##*/}"  # none on a second call
if [ ${#missing[@]} -gt 0 ] && "$python" -m pip --version >/dev/null 2>&1; then
    # --target also keeps pip clear of a system Python's "externally managed" guard (PEP 668).
    "$python" -m pip install --quiet --no-deps --no-index --target "$site" "${missing[@]}"
else
    for wheel in "${missing[@]}"; do "$python" -m zipfile -e "$wheel" "$site"; done
fi
KERAS_BACKEND=jax "$python" -c "import jax, keras; print('gpu_check: jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"

rm -f "$out"/result-*.json
run=0
for entry in $plan; do
    IFS=: read -r recipe cache flags <<<"$entry"
    run=$((run + 1))
    cache_dir=$out/jax-cache${flags:+-$(tr -c 'A-Za-z0-9\n' _ <<<"$flags")}
    [ "$cache" = cold ] && rm -rf "$cache_dir"
    label=$run-$recipe-$cache${flags:+-xla}
    echo "gpu_check: run $run ($label)${flags:+ XLA_FLAGS=${flags//,/ }}"
    env KERAS_BACKEND=jax ${flags:+XLA_FLAGS="${flags//,/ }"} "$python" -m bench.gpu_train --mnist "$mnist" \
        --out "$out" --epochs "$epochs" --train-subset "$subset" --precision "$precision" --recipe "$recipe" \
        --label "$label" --cache "$cache_dir"
done
"$python" - "$out" <<'PY'
import json, pathlib, sys
print("gpu_check: run | training s | first epoch s | later epochs s | XLA compiles (s) | cache hits | test accuracy")
for path in sorted(pathlib.Path(sys.argv[1]).glob("result-*.json"), key=lambda p: int(p.stem.split("-")[1])):
    r = json.loads(path.read_text()); c = r["compiles_during_training"]
    print(f"gpu_check: {r['label']} | {r['training_seconds']:.2f} | {r['first_epoch_seconds']:.2f}"
          f" | {r['later_epochs_median_seconds']} | {c['xla_compiles']} ({c['xla_compile_seconds']:.1f})"
          f" | {c['cache_hits']} | {r['test_accuracy']:.4f}")
PY
echo "gpu_check: results in $out/result-*.json; next, on a CPU machine with the project's .venv:"
echo "  .venv/bin/python -m trainer.export_onnx $out/model.keras --check path/to/mnist.npz"
