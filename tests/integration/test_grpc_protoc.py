"""The committed gRPC descriptor is what grpcio-tools' protoc compiles the .proto to (protoc runs as a process;
the service itself is tested in-process in tests/unit/test_grpc_service.py)."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

from server.protocols import v2_grpc_messages as pb


def test_the_descriptor_is_what_the_proto_compiles_to(tmp_path) -> None:
    """grpc_predict_v2.desc is generated from the .proto by grpcio-tools (pinned in requirements/dev.txt)."""
    proto = ROOT / "server" / "protocols" / "proto"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto}", f"--descriptor_set_out={tmp_path}/d",
                    str(proto / "grpc_predict_v2.proto")], check=True)
    assert (tmp_path / "d").read_bytes() == pb.DESCRIPTOR_FILE.read_bytes()
