"""deploy/monitoring/ in-process: every alert has a runbook section and the dashboard's queries are well formed.
promtool's checks (it runs as a process) are tests/integration/test_monitoring_promtool.py.
The dashboard's queries are checked against a live server's /metrics in tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"


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
