"""Which numeric precision to train in: mixed bfloat16 where the CPU computes it natively.

On a CPU with AMX (Intel Sapphire Rapids and newer), Keras' `mixed_bfloat16` policy runs the
convolutions and dense layers in bfloat16 on the AMX tiles while the weights stay float32; on
this project's 2-core machine that halves the time per epoch at the same accuracy (measured in
`bench/results.md`, "Training variants tried"). Without AMX, TensorFlow emulates bfloat16 and
training gets slower, so `auto` keeps float32 there. The published model is float32 either way.

On a GPU the rule is the GPU's own: NVIDIA GPUs of compute capability 8.0 (Ampere) and newer
have bfloat16 tensor cores, so `auto` trains in mixed bfloat16 there and in float32 on older ones.
"""

from __future__ import annotations

from pathlib import Path

FLOAT32 = "float32"
MIXED_BFLOAT16 = "mixed_bfloat16"
NATIVE_BFLOAT16_FLAG = "amx_bf16"  # /proc/cpuinfo's name for AMX bfloat16 tiles
CPUINFO = Path("/proc/cpuinfo")
BFLOAT16_GPU_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA tensor cores with bfloat16


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor listed in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def resolve(setting: str, cpuinfo: str | None = None, gpu_capability: tuple[int, int] | None = None) -> str:
    """FLOAT32 or MIXED_BFLOAT16 for TRAIN_PRECISION=`setting` on this CPU (or the one `cpuinfo` describes).

    `gpu_capability`: the compute capability of the GPU that trains, None when training on the CPU.
    """
    if setting != "auto":
        return setting
    if gpu_capability is not None:
        return MIXED_BFLOAT16 if tuple(gpu_capability) >= BFLOAT16_GPU_CAPABILITY else FLOAT32
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:  # not Linux: no way to tell, so the precision that is fast everywhere
            return FLOAT32
    return MIXED_BFLOAT16 if NATIVE_BFLOAT16_FLAG in cpu_flags(cpuinfo) else FLOAT32
