"""The field's gRPC clients, unmodified, against a running gRPC server: run as a script, one client per process.

    python tests/integration/grpc_clients.py triton|kserve|health HOST:PORT DIGITS.npy TOKEN

tritonclient.grpc and kserve each register the same `inference.*` protobuf names in protobuf's default
pool and refuse to load beside each other, so each runs in its own process (the server keeps its
descriptors in a private pool and loads beside either). Prints what each call answered as JSON lines
on stdout; tests/integration/test_grpc_clients.py asserts on them.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import numpy as np

from shared.preprocess import mnist_to_png


def emit(name: str, value: Any) -> None:
    print(json.dumps({"name": name, "value": value}), flush=True)


def triton(address: str, images: np.ndarray, token: str) -> None:
    import tritonclient.grpc as client_module
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import InferenceServerException

    auth = {"authorization": f"Bearer {token}"}
    client = client_module.InferenceServerClient(url=address)
    emit("live_ready", [client.is_server_live(), client.is_server_ready(), client.is_model_ready("mnist"),
                        client.is_model_ready("mnist", "1")])
    emit("extensions", client.get_server_metadata(as_json=True)["extensions"])
    emit("metadata", client.get_model_metadata("mnist", "1", as_json=True))
    for version in ("", "1"):  # the client's default: raw_input_contents in, raw_output_contents out
        tensor = client_module.InferInput("pixels", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images)
        result = client.infer("mnist", [tensor], model_version=version, request_id="t-1", headers=auth)
        answer = result.get_response()
        emit(f"raw {version or 'served'}", {"id": answer.id, "version": answer.model_version,
                                            "raw": len(answer.raw_output_contents),
                                            "labels": result.as_numpy("label").tolist(),
                                            "argmax": result.as_numpy("probabilities").argmax(axis=1).tolist()})
    # Typed contents: the client's own generated stubs and messages, as a Triton user without raw bytes would.
    request = service_pb2.ModelInferRequest(model_name="mnist", id="t-2")
    request.inputs.add(name="pixels", datatype="FP32", shape=list(images.shape)).contents.fp32_contents.extend(
        images.astype(np.float32).ravel().tolist())
    response = service_pb2_grpc.GRPCInferenceServiceStub(client._channel).ModelInfer(
        request, metadata=tuple(auth.items()))
    typed = client_module.InferResult(response)
    emit("typed", {"id": response.id, "raw": len(response.raw_output_contents),
                   "labels": typed.as_numpy("label").tolist()})
    pngs = np.array([mnist_to_png(image.astype(np.uint8), 3) for image in images[:16]], dtype=np.object_)
    tensor = client_module.InferInput("images", [16], "BYTES")
    tensor.set_data_from_numpy(pngs)
    emit("png", client.infer("mnist", [tensor], headers=auth).as_numpy("label").tolist())
    for case, version, headers in (("unknown version", "7", auth), ("no token", "", None)):
        tensor = client_module.InferInput("pixels", [1, 28, 28], "UINT8")
        tensor.set_data_from_numpy(np.zeros((1, 28, 28), np.uint8))
        try:
            client.infer("mnist", [tensor], model_version=version, headers=headers)
            emit(case, None)
        except InferenceServerException as error:
            emit(case, [error.status(), error.message()])


def kserve(address: str, images: np.ndarray, token: str) -> None:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async def calls() -> None:
        client = InferenceGRPCClient(url=address, timeout=30)
        emit("live_ready", [await client.is_server_live(), await client.is_server_ready(),
                            await client.is_model_ready("mnist")])
        for binary in (True, False):  # raw_input_contents, then typed uint_contents
            tensor = InferInput("pixels", list(images.shape), "UINT8")
            tensor.set_data_from_numpy(images, binary_data=binary)
            response = await client.infer(InferRequest("mnist", [tensor], request_id="k-1"),
                                          headers=(("authorization", f"Bearer {token}"),))
            outputs = {output.name: output.as_numpy() for output in response.outputs}
            emit("raw" if binary else "typed", {"id": response.id, "labels": outputs["label"].tolist(),
                                                "shape": list(outputs["probabilities"].shape)})
        await client.close()

    asyncio.run(calls())


def health(address: str, _images: np.ndarray, _token: str) -> None:
    """What grpc_health_probe does: grpc.health.v1.Health/Check for the server ("") and for the service."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            emit(service or "server", health_pb2.HealthCheckResponse.ServingStatus.Name(status))


if __name__ == "__main__":
    mode, address, digits_path, token = sys.argv[1:5]
    {"triton": triton, "kserve": kserve, "health": health}[mode](address, np.load(digits_path), token)
