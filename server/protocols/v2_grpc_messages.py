"""The Open Inference Protocol's gRPC messages, from the checked-in descriptor (proto/grpc_predict_v2.desc).

The descriptor goes into a private descriptor pool, not protobuf's default one: tritonclient.grpc and
kserve each register their own copy of the `inference.*` names in the default pool, and two copies there
refuse to load in one process (duplicate symbol). A private pool keeps this module importable beside
either client (in tests, in tools), and the wire format is the same.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PACKAGE = "inference"
SERVICE = f"{PACKAGE}.GRPCInferenceService"
DESCRIPTOR_FILE = Path(__file__).with_name("proto") / "grpc_predict_v2.desc"

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_FILE.read_bytes()).file:
    POOL.Add(_file)
SERVICE_DESCRIPTOR = POOL.FindServiceByName(SERVICE)


def _message(name: str) -> type:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


ServerLiveRequest = _message("ServerLiveRequest")
ServerLiveResponse = _message("ServerLiveResponse")
ServerReadyRequest = _message("ServerReadyRequest")
ServerReadyResponse = _message("ServerReadyResponse")
ModelReadyRequest = _message("ModelReadyRequest")
ModelReadyResponse = _message("ModelReadyResponse")
ServerMetadataRequest = _message("ServerMetadataRequest")
ServerMetadataResponse = _message("ServerMetadataResponse")
ModelMetadataRequest = _message("ModelMetadataRequest")
ModelMetadataResponse = _message("ModelMetadataResponse")
ModelInferRequest = _message("ModelInferRequest")
ModelInferResponse = _message("ModelInferResponse")
InferParameter = _message("InferParameter")
InferTensorContents = _message("InferTensorContents")

# method name -> (request class, response class), as the service declares them
METHODS = {method.name: (message_factory.GetMessageClass(method.input_type),
                         message_factory.GetMessageClass(method.output_type))
           for method in SERVICE_DESCRIPTOR.methods}
