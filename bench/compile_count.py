"""How many programs a training run traces and compiles (issue 27: one program per shape).

`StepTraces` counts the calls of Keras' train, test and predict steps: under both TensorFlow and
JAX a step's Python code runs only while a new program is traced (once per input shape), never
on the steps that reuse one. Under JAX each trace is then compiled by XLA or loaded from the
persistent cache; `jax_compiles()` counts those, from JAX's own monitoring events.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

STEPS = ("train_step", "test_step", "predict_step")
# JAX's monitoring event names (jax/_src/dispatch.py, compilation_cache.py).
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class StepTraces:
    """`with StepTraces() as traces:` ... `traces.counts` -> {"train_step": 1, ...}."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._originals: dict[str, Any] = {}

    def __enter__(self) -> StepTraces:
        import keras

        for name in STEPS:
            original = getattr(keras.Model, name)
            self._originals[name] = original

            def counting(model: Any, *args: Any, _name: str = name, _original: Any = original) -> Any:
                self.counts[_name] += 1
                return _original(model, *args)

            setattr(keras.Model, name, functools.wraps(original)(counting))
        return self

    def __exit__(self, *exc: object) -> None:
        import keras

        for name, original in self._originals.items():
            setattr(keras.Model, name, original)

    def summary(self) -> dict[str, int]:
        return {name: self.counts[name] for name in STEPS}


class JaxCompiles:
    """XLA compilations and persistent-cache hits in this process since `start()` (JAX only)."""

    def __init__(self) -> None:
        self.durations: list[float] = []
        self.cache_hits = 0

    def start(self) -> JaxCompiles:
        import jax

        def on_duration(event: str, seconds: float, **kwargs: Any) -> None:
            if event == BACKEND_COMPILE_EVENT:
                self.durations.append(seconds)

        def on_event(event: str, **kwargs: Any) -> None:
            if event == CACHE_HIT_EVENT:
                self.cache_hits += 1

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        jax.monitoring.register_event_listener(on_event)
        return self

    def summary(self) -> dict[str, Any]:
        """Compile count and seconds (most of them tiny eager ops: initializers, seeds), the longest
        ones (the steps), and the programs loaded from the persistent cache instead."""
        return {"xla_compiles": len(self.durations), "xla_compile_seconds": round(sum(self.durations), 2),
                "longest_compiles_seconds": [round(seconds, 2) for seconds in sorted(self.durations)[::-1][:4]],
                "cache_hits": self.cache_hits}
