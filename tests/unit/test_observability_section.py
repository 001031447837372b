"""bench/results.md's request-log/tracing section renders the figures bench/parts/observability.py writes."""

from __future__ import annotations

from bench.parts.observability import section

HTTP = {"connections": 16, "seconds": 8, "rounds": 3, "layout": "2 gevent workers x 1 compute thread(s)",
        "load_average": ["1.00 1.00 1.00", "2.00 1.50 1.00"],
        "variants": {
            "without request log": {"requests_per_second": 1000.0, "p50_ms": 15.0, "p99_ms": 30.0,
                                    "cpu_us_per_request": 1800.0, "errors": 0,
                                    "rounds_requests_per_second": [990.0, 1000.0, 1010.0]},
            "request log, tracing off": {"requests_per_second": 980.0, "p50_ms": 15.5, "p99_ms": 31.0,
                                         "cpu_us_per_request": 1830.0, "errors": 0,
                                         "rounds_requests_per_second": [970.0, 980.0, 1000.0],
                                         "ratio_to_unlogged_by_round": [0.98, 0.98, 0.99]},
            "request log, tracing on": {"requests_per_second": 700.0, "p50_ms": 22.0, "p99_ms": 45.0,
                                        "cpu_us_per_request": 2500.0, "errors": 0,
                                        "rounds_requests_per_second": [700.0, 690.0, 710.0],
                                        "ratio_to_unlogged_by_round": [0.71, 0.69, 0.7]}}}
FIGURES = {"without request log (before)": {"median_us": 500.0, "rounds_us": [490.0, 500.0, 510.0]},
           "request log, tracing off": {"median_us": 560.5, "rounds_us": [560.5, 570.0, 550.0]},
           "measured_at": "2026-12-04T13:17:16+00:00", "requests_per_round": 1000}


def test_the_section_has_a_row_per_variant_with_its_added_cost() -> None:
    lines = section({**FIGURES, "http": HTTP}, {})
    assert lines[0] == "## Request log and tracing cost (measured 2026-12-04T13:17:16+00:00)"
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[1:4] == ["| without request log | 1000.0 | 1.000 | 15.0 | 30.0 | 1800.0 | 0 |",
                         "| request log, tracing off | 980.0 | 0.980 (0.98, 0.98, 0.99) | 15.5 | 31.0 | 1830.0 | 0 |",
                         "| request log, tracing on | 700.0 | 0.700 (0.71, 0.69, 0.70) | 22.0 | 45.0 | 2500.0 | 0 |"]
    assert rows[-2:] == ["| without request log (before) | 500.0 | +0.0 | 490.0, 500.0, 510.0 |",
                         "| request log, tracing off | 560.5 | +60.5 | 560.5, 570.0, 550.0 |"]
    verdict = next(line for line in lines if line.startswith("Request log with tracing off"))
    assert "98.0% of the unlogged server's requests/s" in verdict and "Noise band" not in verdict  # no A/A run
    assert "+30 us of server CPU per request" in verdict and "Tracing on: 70.0%, +700 us" in verdict
    assert any("1000 requests a round" in line for line in lines)
    assert any("16 connections, 8 s per variant and round, 3 rounds" in line for line in lines)


def test_without_http_figures_only_the_in_process_table_shows() -> None:
    lines = section(FIGURES, {})
    assert not any("requests/s" in line for line in lines)
    assert [line for line in lines if line.startswith("| ")][-1].startswith("| request log, tracing off | 560.5")


def _with_second_server(ratios: list[float]) -> dict:
    second = {"requests_per_second": 1000.0, "p50_ms": 15.0, "p99_ms": 30.0, "cpu_us_per_request": 1800.0,
              "errors": 0, "rounds_requests_per_second": [990.0, 1000.0, 1010.0], "ratio_to_unlogged_by_round": ratios}
    variants = dict(HTTP["variants"])
    variants = {"without request log": variants.pop("without request log"),
                "without request log, a second server": second, **variants}
    return {**HTTP, "variants": variants}


def test_the_verdict_judges_the_log_against_the_a_a_noise_band() -> None:
    """Two identical unlogged servers in the same rounds give the band; the log's median ratio (0.98) is
    within a ±3 % band and outside a ±1 % one."""
    for ratios, word in (([0.97, 1.02, 1.0], "±3.0%, their median ratio 100.0%; the log's median ratio is within"),
                         ([0.99, 1.01, 1.0], "±1.0%, their median ratio 100.0%; the log's median ratio is outside")):
        lines = section({**FIGURES, "http": _with_second_server(ratios)}, {})
        verdict = next(line for line in lines if line.startswith("Request log with tracing off"))
        assert word in verdict and "Tracing on: 70.0%" in verdict
        assert sum(line.startswith("| without request log") for line in lines) == 3  # 2 over HTTP, 1 in process
