"""`/metrics` passes Prometheus' own linter, `promtool check metrics` (Debian's prometheus package,
installed by `make promtool`): a scraper reads every line, and names, types and help follow its conventions.
The in-process registry here; the multi-worker one of real gunicorn in tests/integration/test_server_api.py."""

from __future__ import annotations

import numpy as np
import orjson
from conftest import promtool_problems

from server.protocols import v2


def test_promtool_finds_nothing_to_fix_in_metrics(client) -> None:
    images = np.zeros((3, 28, 28), np.uint8)
    header = orjson.dumps({"inputs": [{"name": "pixels", "shape": [3, 28, 28], "datatype": "UINT8",
                                       "parameters": {"binary_data_size": images.nbytes}}]})
    assert client.post("/v2/models/mnist/infer", data=header + images.tobytes(),
                       headers={v2.HEADER_LENGTH: str(len(header))}).status_code == 200
    assert client.post("/predict", json={"instances": []}).status_code == 400
    assert client.get("/nope").status_code == 404
    response = client.get("/metrics")
    assert b"mnist_inference_batch_size_count" in response.data and b'status="400"' in response.data
    assert promtool_problems(response.data) == ""


def test_promtool_check_can_fail() -> None:
    assert "counter" in promtool_problems(b"# HELP jobs done\n# TYPE jobs counter\njobs 3\n").lower()
