"""The README's one table of figures, rendered from bench/results.json (the peers part of `make bench-peers`).

    python -m bench.headline          # rewrite the table in README.md from bench/results.json
    python -m bench.headline --check  # exit 1 when README.md's table differs from what results.json gives

Every figure in it is copied from results.json, never typed by hand, so it cannot drift from
bench/results.md (which run.py writes from the same file); tests/unit/test_readme_figures.py checks both.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.report import table

ROOT = Path(__file__).resolve().parent.parent
RESULTS_JSON = ROOT / "bench" / "results.json"
README = ROOT / "README.md"
BEGIN = "<!-- headline: generated from bench/results.json by `python -m bench.headline`; do not edit by hand -->"
END = "<!-- /headline -->"
# (case in results.json, what it is, the figure compared): the busiest case of each kind.
CASES = (
    ("A c16", "batch 1, v2 JSON, 16 connections: req/s", "requests_per_second"),
    ("B c4", "batch 256, v2 JSON, 4 connections: images/s", "images_per_second"),
    ("C c4", "batch 256, v2 binary, 4 connections: images/s", "images_per_second"),
)


def _best_peer(servers: dict[str, Any], pick: Any) -> tuple[str, Any]:
    """(name, figure) of the other server with the highest `pick(entry)`, skipping those without it."""
    figures = [(name, pick(entry)) for name, entry in servers.items() if name != "ours"]
    return max(((name, value) for name, value in figures if value is not None), key=lambda item: item[1])


def _row(what: str, ours: float, peer: tuple[str, float]) -> list[str]:
    name, value = peer
    return [what, str(ours), f"{name} {value}", f"{ours / value:.2f}"]


def headline_rows(results: dict[str, Any]) -> list[list[str]]:
    """Ours against the best other server of each case, as results.md's "Ours against the best peer" rows."""
    servers = results["peers"]["servers"]
    rows = []
    for case, what, key in CASES:
        peer = _best_peer(servers, lambda entry, case=case, key=key: entry["cases"].get(case, {}).get(key))
        rows.append(_row(what, servers["ours"]["cases"][case][key], peer))
    smallest = min(((entry["tree_pss_mib"], name) for name, entry in servers.items() if name != "ours"))
    rows.append(_row("memory after load (process tree PSS): MiB", servers["ours"]["tree_pss_mib"],
                     (smallest[1], smallest[0])))
    fastest = min(((entry["start_to_ready_seconds"], name) for name, entry in servers.items() if name != "ours"))
    rows.append(_row("start to ready: s", servers["ours"]["start_to_ready_seconds"], (fastest[1], fastest[0])))
    return rows


def headline_table(results: dict[str, Any]) -> str:
    """The README block: markers, a one-line source note and the table."""
    peers = results["peers"]
    header = ["", "ours", "best other server", "ours / best"]
    others = ", ".join(name for name in peers["servers"] if name != "ours")
    lines = [BEGIN, "", f"Measured {peers['measured_at']} on {peers['measured_on']} by `make bench-peers` (medians of"
             f" {peers['rounds']} rounds; {others} serving the same `model.onnx` on the same cores):", "",
             table(header, headline_rows(results))]
    return "\n".join([*lines, "", END])


def load_results(path: Path = RESULTS_JSON) -> dict[str, Any]:
    return json.loads(path.read_text())


def readme_block(text: str) -> str:
    """The headline block as it stands in the README text (markers included); ValueError when absent."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no headline block ({BEGIN!r} ... {END!r})")
    return text[start:end + len(END)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.headline", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the README's table differs")
    args = parser.parse_args()
    results = load_results()
    if not results.get("peers"):
        print("bench.headline: bench/results.json has no peers part yet (make bench-peers); README.md left as it is")
        return
    text, fresh = README.read_text(), headline_table(results)
    current = readme_block(text)
    if args.check:
        if current != fresh:
            sys.exit("bench.headline: README.md's table differs from bench/results.json; run python -m bench.headline")
        print("bench.headline: README.md's table matches bench/results.json")
        return
    README.write_text(text.replace(current, fresh))
    print(f"bench.headline: README.md's table {'unchanged' if current == fresh else 'rewritten'} from "
          f"{RESULTS_JSON.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
