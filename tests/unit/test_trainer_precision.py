"""The trainer's `auto` precision on a CPU, from /proc/cpuinfo's text (trainer/precision.py), in-process."""

from __future__ import annotations

import pytest

from trainer import precision

AMX_CPU = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n\nprocessor\t: 1\n"
AVX512_BF16_CPU = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n"


@pytest.mark.parametrize(
    ("setting", "cpuinfo", "expected"),
    [
        ("auto", AMX_CPU, "mixed_bfloat16"),
        ("auto", AVX512_BF16_CPU, "float32"),  # bfloat16 without AMX measured slower than float32
        ("auto", "", "float32"),
        ("float32", AMX_CPU, "float32"),
        ("mixed_bfloat16", AVX512_BF16_CPU, "mixed_bfloat16"),
    ],
)
def test_auto_precision_is_mixed_bfloat16_only_on_cpus_with_amx(setting, cpuinfo, expected):
    assert precision.resolve(setting, cpuinfo) == expected
