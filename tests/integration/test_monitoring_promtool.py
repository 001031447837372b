"""deploy/monitoring/: Prometheus' config and alert rules pass `promtool check`, and every alert rule behaves as
its synthetic series in alerts.test.yml say (`promtool test rules`: fires when it should, quiet when not).
The in-process checks (runbooks, dashboard) are tests/unit/test_monitoring.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from helpers import ROOT

MONITORING = ROOT / "deploy" / "monitoring"


def promtool(*args: str) -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install Debian's prometheus package with `make promtool` "
                    "(scripts/install-promtool.sh)")
    result = subprocess.run([found, *args], cwd=MONITORING, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_config_and_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yml")


def test_every_alert_rule_is_unit_tested() -> None:
    promtool("test", "rules", "alerts.test.yml")
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert firing == alerts  # each rule has a case where it must fire
    assert {"MnistHighErrorRatio", "MnistSlowRoute", "MnistNoModelLoaded", "MnistModelLoadFailed",
            "MnistReplicaDown", "MnistBatchQueueFull"} <= alerts
