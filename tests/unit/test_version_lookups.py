"""Version metadata and readiness come from the store, never from loading the model (issue 23, item 4).

Before: every unauthenticated GET of /v2/models/mnist/versions/{v}[/ready] or /v1/models/mnist/versions/{v}
[/metadata] loaded version v (only two extra versions stay cached), so walking the versions loaded model after
model and queued authenticated predictions behind the loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import standin_loader

VERSION_GETS = ("/v2/models/mnist/versions/{v}", "/v2/models/mnist/versions/{v}/ready",
                "/v1/models/mnist/versions/{v}", "/v1/models/mnist/versions/{v}/metadata")


@pytest.fixture
def counted(standin_home: Path):
    from server.app import create_app
    from shared.config import Config

    loads: list[str] = []

    def loader(backend: str, folder: Path, threads: int) -> Any:
        loads.append(Path(folder).name)
        return standin_loader(backend, folder, threads)

    for version in (3, 4, 5):  # 5 is served; 1 to 4 are older versions
        folder = standin_home / "mnist" / str(version)
        folder.mkdir()
        (folder / "metadata.json").write_text(json.dumps({"version": version}))
    app = create_app(Config(home=standin_home, max_batch_size=64), loader=loader)
    yield app.test_client(), loads
    app.extensions["mnist"].manager.stop()


def test_version_metadata_and_ready_gets_load_nothing(counted):
    client, loads = counted
    before = list(loads)
    for version in (1, 2, 3, 4):
        for template in VERSION_GETS:
            response = client.get(template.format(v=version))
            assert response.status_code == 200, (template, response.data)
    assert loads == before, f"GETs loaded versions {loads[len(before):]}"


def test_unknown_versions_are_still_404(counted):
    client, _loads = counted
    for template in VERSION_GETS:
        response = client.get(template.format(v=9))
        assert response.status_code == 404, (template, response.data)
        assert "9" in response.get_json()["error"]


def test_inference_on_a_version_loads_it(counted):
    client, loads = counted
    response = client.post("/v2/models/mnist/versions/3/infer", json={"inputs": [
        {"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": [0] * 784}]})
    assert response.status_code == 200, response.data
    assert response.get_json()["model_version"] == "3"
    assert "3" in loads
