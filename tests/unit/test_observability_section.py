"""bench/results.md's request-log/tracing section renders the figures bench/parts/observability.py writes."""

from __future__ import annotations

from bench.parts.observability import section


def test_the_section_has_a_row_per_variant_with_its_added_cost() -> None:
    figures = {"without request log (before)": {"median_us": 500.0, "rounds_us": [490.0, 500.0, 510.0]},
               "request log, tracing off": {"median_us": 560.5, "rounds_us": [560.5, 570.0, 550.0]},
               "measured": "2026-12-04T13:17:16Z", "requests_per_round": 1000}
    lines = section(figures, {})
    assert "## Request log and tracing cost" in lines
    rows = [line for line in lines if line][-2:]
    assert rows == ["| without request log (before) | 500.0 | +0.0 | 490.0, 500.0, 510.0 |",
                    "| request log, tracing off | 560.5 | +60.5 | 560.5, 570.0, 550.0 |"]
    assert any("1000 requests a round" in line for line in lines)
