"""`make bench`: every benchmark part in its own process, then bench/results.json and results.md.

    python -m bench.run [--epochs N] [--only training,inference,http]
    python -m bench.run --report-only [--only recipes]

The parts are bench/parts/<name>.py (their registry: bench/parts/__init__.py). `--only` reruns some
parts; the others keep the figures results.json publishes (each part records when it was measured).
`--report-only` measures nothing: it re-renders results.md from results.json, taking the parts named
by `--only` from their last run (bench/results/tmp/<part>.json, e.g. `python -m bench.parts.<name>`).
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
    parser.add_argument("--only", help=f"comma-separated, of {', '.join(REGISTRY)} (default: {', '.join(DEFAULT)};"
                                          " with --report-only: none)")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: rewrite results.md (and results.json) from results.json and the"
                             " last run of the parts --only names")
    args = parser.parse_args()
    names = [name for name in (args.only or ("" if args.report_only else ",".join(DEFAULT))).split(",") if name]
    unknown = set(names) - set(REGISTRY)
    if unknown:
        parser.error(f"unknown parts {', '.join(sorted(unknown))}")
    TMP.mkdir(parents=True, exist_ok=True)
    for name in [] if args.report_only else names:
        print(f"bench: --- {name} (load {load_average()}) ---", flush=True)
        REGISTRY[name].run(args.epochs)
    write_report(names, rerender=args.report_only)
    print(f"bench: wrote {RESULTS_MD.relative_to(ROOT)} and {RESULTS_JSON.relative_to(ROOT)}")
    print(RESULTS_MD.read_text())


if __name__ == "__main__":
    main()
