"""deploy/monitoring/: Prometheus' config and alert rules pass `promtool check`, and every alert rule behaves as
its synthetic series in alerts.test.yml say (`promtool test rules`: fires when it should, quiet when not).
The dashboard's queries are checked against a live server's /metrics in tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


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


def test_every_alert_has_a_runbook_section() -> None:
    guide = (MONITORING.parents[1] / "docs" / "operating.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in guide.splitlines() if line.startswith("#")}
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    for rule in (rule for group in rules["groups"] for rule in group["rules"]):
        assert rule["annotations"]["runbook"].split("#")[1] in anchors, rule["alert"]


def test_dashboard_queries_name_the_server_and_a_datasource_input() -> None:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 8
    # Every panel covers gunicorn's replicas and the gRPC processes (prometheus.yml's two jobs).
    assert all('job=~"mnist-server|mnist-grpc"' in expression for expression in expressions)
