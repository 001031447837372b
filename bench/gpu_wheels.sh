#!/usr/bin/env bash
# Run on a machine with PyPI access: downloads into DIR (default gpu-wheels/) the wheels that
# bench/gpu_check.sh installs on a GPU host without internet. That host brings Python, JAX with CUDA
# and ONNX Runtime; what the trainer's code needs besides is Keras (with its small dependencies:
# namex, optree, absl-py, rich, h5py, ml-dtypes, ...) and Pillow (shared/preprocess.py), at the
# versions the trainer image pins. Binary wheels only, for the host's Python (GPU_PYTHON_VERSION,
# default 3.12) on x86-64 Linux. Fails when the folder outgrows MAX_MIB (64), the most a copy to
# such a host may carry here.
#   bench/gpu_wheels.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-gpu-wheels}
python_version=${GPU_PYTHON_VERSION:-3.12}
max_mib=${MAX_MIB:-64}
pip=${PIP:-.venv/bin/pip}
[ -x "$pip" ] || pip="python3 -m pip"

# The pins of the trainer image, so the GPU run trains with the Keras the CPU export loads.
mapfile -t pins < <(grep -E '^(keras|pillow)==' requirements/trainer.txt)
echo "gpu_wheels: ${pins[*]} and their dependencies for Python $python_version into $dir/"
$pip download --quiet --only-binary=:all: --python-version "$python_version" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --dest "$dir" "${pins[@]}"
size_kib=$(du -sk "$dir" | cut -f1)
ls "$dir"
echo "gpu_wheels: $(ls "$dir" | wc -l) wheels, $((size_kib / 1024)) MiB (limit $max_mib MiB)"
if [ "$size_kib" -gt $((max_mib * 1024)) ]; then
    echo "gpu_wheels: $dir/ is over $max_mib MiB" >&2
    exit 1
fi
