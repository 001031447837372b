"""`make bench`: every benchmark part in its own process, then bench/results.json and results.md.

    python -m bench.run [--epochs N] [--only training,inference,http] [--report-only]

The parts are bench/parts/<name>.py (their registry: bench/parts/__init__.py). `--only` reruns some
parts and reports the others from their last run (each part records when it was measured);
`--report-only` measures nothing and re-renders the report from the parts' last figures.
Figures are printed and written; no time is asserted anywhere.
"""

from __future__ import annotations

import argparse

from bench.common import RESULTS_JSON, RESULTS_MD, ROOT, TMP, load_average
from bench.parts import DEFAULT, REGISTRY
from bench.publish import write_report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1, help="training epochs for both sides (default 1)")
    parser.add_argument("--only", default=",".join(DEFAULT),
                        help=f"comma-separated, of {', '.join(REGISTRY)} (default: {', '.join(DEFAULT)})")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite results.md and results.json from the parts' last figures")
    args = parser.parse_args()
    names = [name for name in args.only.split(",") if name] if not args.report_only else []
    unknown = set(names) - set(REGISTRY)
    if unknown:
        parser.error(f"unknown parts {', '.join(sorted(unknown))}")
    TMP.mkdir(parents=True, exist_ok=True)
    for name in names:
        print(f"bench: --- {name} (load {load_average()}) ---", flush=True)
        REGISTRY[name].run(args.epochs)
    write_report()
    print(f"bench: wrote {RESULTS_MD.relative_to(ROOT)} and {RESULTS_JSON.relative_to(ROOT)}")
    print(RESULTS_MD.read_text())


if __name__ == "__main__":
    main()
