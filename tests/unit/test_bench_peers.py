"""The peers comparison's wiring (bench/parts/peers.py) and its cases against the model-only ceiling
(bench/parts/floor.py): no server is started, nothing is timed."""

from __future__ import annotations

from pathlib import Path

from bench.lib.wrk import Body
from bench.parts import floor, peers


def test_both_mosec_configurations_share_one_venv_and_are_ready_only_when_inference_answers(tmp_path: Path) -> None:
    specs = peers.specs(tmp_path / "model.onnx", 8080)
    body = Body(tmp_path / "v2-1.json", "application/json")
    for name in ("mosec", "mosec-batch"):
        launch = specs[name].launch(body)
        assert specs[name].requirements == "mosec"
        assert (launch.ready_path, launch.ready_body) == ("/inference", body)
    assert specs["mosec"].env["PEER_BATCH"] == "1" and int(specs["mosec-batch"].env["PEER_BATCH"]) > 1
    # Peers with a readiness route keep their GET probe.
    assert specs["mlserver"].launch(body).ready_body is None
    assert specs["mlserver"].requirements == "mlserver"


def test_every_peer_configuration_has_pinned_requirements(tmp_path: Path) -> None:
    for name, spec in peers.specs(tmp_path / "model.onnx", 8080).items():
        if name != "ours":
            assert (peers.PEERS_DIR / f"requirements-{spec.requirements}.txt").is_file(), name


def ceiling(one: float, two: float) -> dict[str, dict[str, float]]:
    return {"1": {"images_per_second": one}, "2": {"images_per_second": two}}


def test_each_case_is_set_against_the_ceiling_of_its_batch_size_and_connections() -> None:
    measured = {"ceiling": ceiling(4000, 8000), "ceiling_batch_1": ceiling(2000, 4000)}
    server = {"cases": {"A c1": {"images_per_second": 1000}, "A c16": {"images_per_second": 5000},
                        "B c1": {"images_per_second": 3000}, "B c4": {"images_per_second": 6000},
                        "C c1": {"images_per_second": 4000}, "C c4": {"images_per_second": 4000},
                        "C c4 .npy": {"images_per_second": 8000}}}
    rows = floor.share_rows(measured, "2", {"servers": {"ours": server}})
    assert rows == [["ours", "50%", "125%", "75%", "75%", "100%", "50%"],
                    ["ours, C as .npy", "", "", "", "", "", "100%"]]


def test_a_floor_measured_before_the_batch_1_ceiling_leaves_case_a_blank() -> None:
    server = {"cases": {"A c1": {"images_per_second": 1000}, "C c1": {"images_per_second": 2000}}}
    rows = floor.share_rows({"ceiling": ceiling(4000, 8000)}, "2", {"servers": {"kserve": server}})
    assert rows == [["kserve", "", "", "", "", "50%", ""]]


def test_the_stack_floor_is_set_beside_ours_and_the_best_peer_of_the_peers_run() -> None:
    stack = {"A c16": {"variants": {floor.FREE_MODEL: {"requests_per_second": 4500.0},
                                    floor.EMPTY_APP: {"requests_per_second": 12000.0}}}}
    servers = {name: {"cases": {"A c16": {"requests_per_second": rate}}}
               for name, rate in (("ours", 2600.0), ("mosec", 3100.0), ("mosec-batch", 4800.0))}
    assert floor.stack_rows(stack, {"servers": servers}) == [["A c16", 4500.0, 12000.0, 2600.0, "mosec-batch 4800.0",
                                                              5280.0]]
    assert floor.stack_rows(stack, None) == [["A c16", 4500.0, 12000.0, "", "", ""]]
