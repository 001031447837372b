"""The benchmark parts, one module each, and the one registry of them: name -> module -> report section.

A part `<name>` is the module bench/parts/<name>.py. Run alone (`python -m bench.parts.<name> [args]`, or
`python -m bench.run --only <name>`) it measures, saves its figures with `bench.common.write_part("<name>", ...)`
and prints them as its last stdout line (JSON); `section(figures, parts)` turns the figures into its part of
bench/results.md (a template in bench/templates/). PARTS lists them in the order results.md shows them.
"""

from __future__ import annotations

import importlib
import shutil
from dataclasses import dataclass
from typing import Any

from bench.report import Parts

# The Debian package of a program a part needs, where the names differ.
PACKAGES = {"h2load": "nghttp2-client"}


@dataclass(frozen=True)
class Part:
    name: str
    command: str  # how to rerun it alone, as results.md's command table shows it ({epochs}, {rounds} filled in)
    default: bool = False  # measured by a plain `make bench`
    args: tuple[str, ...] = ()  # arguments of its module ({epochs} filled in)
    needs: tuple[str, ...] = ()  # programs it runs; the part is skipped with a note when one is missing

    @property
    def module(self) -> str:
        return f"bench.parts.{self.name}"

    def run(self, epochs: int) -> None:
        """Measure in a child process (TensorFlow's thread pools and allocator would colour the next part)."""
        from bench.common import run_json

        missing = [program for program in self.needs if not shutil.which(program)]
        if missing:
            packages = " ".join(PACKAGES.get(program, program) for program in missing)
            print(f"bench: {', '.join(missing)} not found (apt-get install {packages}); {self.name} skipped",
                  flush=True)
            return
        run_json(["-m", self.module, *(arg.format(epochs=epochs) for arg in self.args)])

    def section(self, figures: dict[str, Any], parts: Parts) -> list[str]:
        """Its part of results.md (none when its module has no `section` yet)."""
        module = importlib.import_module(self.module)
        return module.section(figures, parts) if hasattr(module, "section") else []


PY = ".venv/bin/python -m"
PARTS = (
    Part("training", f"BENCH_ROUNDS={{rounds}} {PY} bench.parts.training {{epochs}}", default=True,
         args=("{epochs}",)),
    Part("variants", f"{PY} bench.run --only variants   # optional, about 12 minutes"),
    Part("inference", f"{PY} bench.parts.inference", default=True),
    Part("ort", f"BENCH_ROUNDS=2 {PY} bench.run --only ort   # optional, about 3 minutes"),
    Part("http", f"{PY} bench.parts.http   # BENCH_HTTP_SECONDS=8 per case", default=True, needs=("wrk",)),
    Part("profile", f"{PY} bench.run --only profile   # py-spy flame graph of batch 1 under load",
         needs=("wrk",)),
    Part("accept", f"{PY} bench.run --only accept   # optional; BENCH_ACCEPT_RUNS=5 BENCH_SECONDS=4",
         needs=("wrk",)),
    Part("batching", f"{PY} bench.run --only batching   # optional; BENCH_SECONDS=5 BENCH_ROUNDS=2",
         needs=("wrk",)),
    Part("peers", "make bench-peers   # = bench.run --only peers,stability,floor,grpc; BENCH_SECONDS=10"
                  " BENCH_WARMUP=3 BENCH_ROUNDS=2", needs=("wrk",)),
    Part("stability", f"{PY} bench.run --only stability   # ours, A c16 5 times; BENCH_SECONDS", needs=("wrk",)),
    Part("floor", f"{PY} bench.run --only floor   # model-only ceiling; BENCH_FLOOR_SECONDS=8 BENCH_ROUNDS=3"),
    Part("store", f"{PY} bench.parts.store   # volume vs bucket; BENCH_STORE_ROUNDS=6", default=True),
    Part("recipes", f"{PY} bench.run --only recipes   # optional, about 30 minutes; BENCH_RECIPE_SEEDS=1,2,3"
                    " BENCH_RECIPE_BEFORE=<revision>"),
    Part("grpc", f"{PY} bench.run --only grpc   # part of make bench-peers; BENCH_SECONDS=5 BENCH_ROUNDS=2",
         needs=("wrk", "h2load")),
    Part("observability", f"{PY} bench.run --only observability   # request log and tracing cost"),
    Part("inline", f"{PY} bench.run --only inline   # small model runs on the loop; BENCH_SECONDS=5 BENCH_ROUNDS=4",
         needs=("wrk",)),
    Part("hostile", f"{PY} bench.run --only hostile   # slow/silent clients, bombs; BENCH_HOSTILE_MODELS,"
                    " BENCH_HOSTILE_ROUNDS, BENCH_HOSTILE_SECONDS=8", default=True, needs=("wrk",)),
)
REGISTRY = {part.name: part for part in PARTS}
DEFAULT = tuple(part.name for part in PARTS if part.default)
