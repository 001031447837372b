"""The wire formats, as pure codecs: bytes and headers in, `InferRequest` out; `InferResult` in, bytes out.

One module per format (native `/predict`, TF Serving REST, Open Inference Protocol v2); none
imports Flask, so each is tested in-process with plain bytes. The inference path (server.pipeline)
glues them to HTTP and to the data plane (server.dataplane).
"""
