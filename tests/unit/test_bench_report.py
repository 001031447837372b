"""bench/results.md is what its templates make of bench/results.json, and every part module is registered.

The report is generated, never edited: a template or section changed without `python -m bench.run --report-only`
(or figures copied into results.json by hand) leaves the two apart, and this says so.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from bench import report
from bench.common import RESULTS_JSON, RESULTS_MD
from bench.parts import PARTS, REGISTRY
from bench.publish import markdown

PARTS_DIR = Path(__file__).resolve().parents[2] / "bench" / "parts"


def test_results_md_is_rendered_from_results_json() -> None:
    rendered = markdown(json.loads(RESULTS_JSON.read_text()))
    assert rendered == RESULTS_MD.read_text(), "rerun: .venv/bin/python -m bench.run --report-only"


def test_every_part_module_is_registered_once_and_imports() -> None:
    modules = sorted(path.stem for path in PARTS_DIR.glob("*.py") if path.stem != "__init__")
    assert sorted(REGISTRY) == modules
    assert len(PARTS) == len(REGISTRY)
    for part in PARTS:
        assert importlib.import_module(part.module).__name__ == f"bench.parts.{part.name}"


def test_a_template_rejoins_its_paragraphs_and_drops_empty_ones(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "demo.md").write_text("## $title\n\nOne paragraph\nwrapped over\nthree lines.\n\n$block\n\n$maybe\n")
    monkeypatch.setattr(report, "TEMPLATES", tmp_path)
    lines = report.render("demo", title="Demo", block=report.table(["a", "b"], [[1, 2]]), maybe="")
    assert lines == ["## Demo", "", "One paragraph wrapped over three lines.", "", "| a | b |", "|---|---|",
                     "| 1 | 2 |", ""]
