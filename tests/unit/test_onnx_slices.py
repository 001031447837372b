"""OnnxModel runs big batches in RUN_SLICE-image slices (a Scan over the published graph, server/sliced_model.py):
the answer must be the unsliced one, row for row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from server.backends import RUN_SLICE, OnnxModel
from server.sliced_model import SLICES_INPUT, sliced_model


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """(N, 28, 28, 1) -> flatten -> 784x10 matmul -> softmax: the server's input and output convention."""
    weights = np.random.default_rng(0).normal(size=(784, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 28, 28, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(np.array([-1, 784], dtype=np.int64), "shape"), numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("count", [1, RUN_SLICE, RUN_SLICE + 1, 3 * RUN_SLICE + 7])
def test_sliced_runs_answer_like_one_run(tiny_onnx: Path, count: int) -> None:
    model = OnnxModel(tiny_onnx, threads=1)
    batch = np.random.default_rng(count).random((count, 28, 28, 1), dtype=np.float32)
    answer = model.predict(batch)
    one_by_one = np.concatenate([model.predict(batch[i: i + 1]) for i in range(count)])
    assert answer.shape == (count, 10) and answer.dtype == np.float32
    np.testing.assert_allclose(answer, one_by_one, rtol=1e-5, atol=1e-6)


def test_the_sliced_model_is_one_scan_over_the_published_graph(tiny_onnx: Path) -> None:
    import onnxruntime

    wrapped = onnx.load_from_string(sliced_model(tiny_onnx, RUN_SLICE))
    onnx.checker.check_model(wrapped)
    assert [node.op_type for node in wrapped.graph.node] == ["Scan"]
    batch = np.random.default_rng(1).random((3, RUN_SLICE, 28, 28, 1), dtype=np.float32)
    sliced = onnxruntime.InferenceSession(wrapped.SerializeToString(), providers=["CPUExecutionProvider"])
    plain = onnxruntime.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    answer = sliced.run(None, {SLICES_INPUT: batch})[0]
    assert answer.shape == (3, RUN_SLICE, 10)
    np.testing.assert_allclose(answer.reshape(-1, 10), plain.run(None, {"x": batch.reshape(-1, 28, 28, 1)})[0],
                               rtol=1e-5, atol=1e-6)


def test_a_model_with_two_inputs_is_refused_by_name(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])], "two",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 10]) for name in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 10])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(ValueError, match="one input and one output, got 2 and 1"):
        sliced_model(path, RUN_SLICE)
