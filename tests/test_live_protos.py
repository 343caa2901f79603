"""The gRPC code in labkit/live/pb is generated from protos/ (never edited, never committed),
and protos/agent_worker.proto stays wire-compatible with AutoGen 0.7.5's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from labkit.live import codegen

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = codegen.generate(out=tmp_path)
    installed = codegen.OUT
    assert fresh, "protoc produced nothing"
    for path in fresh:
        current = installed / path.name
        assert current.exists(), (
            f"{current} is missing: run `make` (or python -m labkit.live.codegen)"
        )
        assert current.read_text() == path.read_text(), (
            f"{current} is out of date with protos/: run `python -m labkit.live.codegen`"
        )


_DUMP = """
import json, sys
from google.protobuf import descriptor_pb2
mods = sys.argv[1:]
out = {}
for name in mods:
    mod = __import__(name, fromlist=["DESCRIPTOR"])
    fd = descriptor_pb2.FileDescriptorProto()
    mod.DESCRIPTOR.CopyToProto(fd)
    def walk(msgs, prefix):
        for m in msgs:
            full = prefix + m.name
            out[full] = sorted(
                (f.number, f.name, f.type, f.type_name, f.label, f.proto3_optional)
                for f in m.field
            )
            walk(m.nested_type, full + ".")
    walk(fd.message_type, fd.package + ".")
    for s in fd.service:
        out["service " + fd.package + "." + s.name] = sorted(
            (m.name, m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            for m in s.method
        )
print(json.dumps(out, sort_keys=True))
"""


def _dump(modules: list[str]) -> dict:
    # each side in its own process: both define agents.AgentId, and one protobuf descriptor
    # pool cannot hold two files defining the same symbols
    done = subprocess.run(
        [sys.executable, "-c", _DUMP, *modules], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_agent_worker_protocol_matches_autogen() -> None:
    # look, do not import: its cloudevent.proto and ours cannot share one descriptor pool
    if importlib.util.find_spec("autogen_ext") is None:
        pytest.skip("autogen-ext[grpc] is not installed (it is a test extra)")
    theirs = _dump(
        [
            "autogen_ext.runtimes.grpc.protos.cloudevent_pb2",
            "autogen_ext.runtimes.grpc.protos.agent_worker_pb2",
        ]
    )
    ours = _dump(["labkit.live.pb.cloudevent_pb2", "labkit.live.pb.agent_worker_pb2"])
    assert ours == theirs
    assert "service agents.AgentRpc" in ours


def test_labkit_service_is_separate_from_agent_rpc() -> None:
    ours = _dump(["labkit.live.pb.labkit_pb2"])
    assert "service labkit.LabkitGateway" in ours
    assert not any(k.startswith("agents.") for k in ours)
