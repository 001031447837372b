"""The served ONNX model wrapped in a Scan over slices of a few images: one ONNX Runtime call per batch.

A batch run in slices of 8 images is faster than run whole (a slice's activations stay in the CPU's
caches; bench/results.md, "ONNX Runtime session settings"). Slicing from Python returned to the
interpreter between slices, 32 times per 256 images, and each time the thread had to take the GIL
back from the worker's other threads (its event loop, the other compute threads), so under several
connections of big batches a call waited for the GIL while a core idled (its wall time above its
CPU time). In a Scan node ONNX Runtime walks the slices itself with the GIL released for the whole
batch, and saves the per-call overhead too; the answers are identical. The wrapper is built in
memory with the `onnx` package; the store keeps the trainer's `model.onnx` as published.

    sliced = sliced_model(Path("model.onnx"), slice_size=8)   # bytes for onnxruntime.InferenceSession
    # input "slices": (k, 8, 28, 28, 1) -> output "probabilities": (k, 8, 10)
"""

from __future__ import annotations

from pathlib import Path

SLICES_INPUT = "slices"
SLICES_OUTPUT = "probabilities"


def sliced_model(path: Path, slice_size: int) -> bytes:
    """`path`'s model as the body of a Scan over its first axis, each step `slice_size` images."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    body = model.graph
    if len(body.input) != 1 or len(body.output) != 1:
        raise ValueError(f"expected a model with one input and one output, got {len(body.input)} and"
                         f" {len(body.output)}")

    def with_slices(value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
        tensor = value.type.tensor_type
        dims = [dim.dim_value or dim.dim_param or None for dim in tensor.shape.dim[1:]]
        return helper.make_tensor_value_info(name, tensor.elem_type, ["slices", slice_size, *dims])

    scan = helper.make_node("Scan", [SLICES_INPUT], [SLICES_OUTPUT], body=body, num_scan_inputs=1)
    graph = helper.make_graph([scan], "sliced", [with_slices(body.input[0], SLICES_INPUT)],
                              [with_slices(body.output[0], SLICES_OUTPUT)])
    wrapped = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return wrapped.SerializeToString()
