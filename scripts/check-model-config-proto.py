#!/usr/bin/env python3
"""Checks proto/model_config.proto against Triton's own compiled schema.

The reference is tritonclient's model_config_pb2 (in .venv-clients); the file
under test is compiled with protoc ($PROTOC, else the one the protoc-bin-vendored
crate ships). Every message, field (name, number, label, type, oneof), map and
enum value must agree; comments and declaration order may differ. Run it after
upgrading tritonclient to see what Triton's schema gained.

    .venv-clients/bin/python scripts/check-model-config-proto.py
"""
import glob
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_protoc():
    if os.environ.get("PROTOC"):
        return os.environ["PROTOC"]
    pattern = os.path.expanduser(
        "~/.cargo/registry/src/*/protoc-bin-vendored-linux-x86_64-*/bin/protoc")
    found = sorted(glob.glob(pattern))
    if not found:
        sys.exit("no protoc: set PROTOC, or build inferd once to fetch protoc-bin-vendored")
    return found[-1]


def compiled():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.bin")
        subprocess.run([find_protoc(), f"--proto_path={root}/proto",
                        f"--descriptor_set_out={out}", "model_config.proto"], check=True)
        with open(out, "rb") as f:
            return descriptor_pb2.FileDescriptorSet.FromString(f.read()).file[0]


def shape(path, message, into):
    """Flattens a message and everything nested in it into comparable rows."""
    oneofs = [o.name for o in message.oneof_decl]
    for f in message.field:
        oneof = oneofs[f.oneof_index] if f.HasField("oneof_index") else ""
        into.add((f"{path}.{f.name}", f.number, f.label, f.type, f.type_name, oneof))
    if message.options.map_entry:
        into.add((path, "map_entry"))
    for enum in message.enum_type:
        for v in enum.value:
            into.add((f"{path}.{enum.name}.{v.name}", v.number))
    for nested in message.nested_type:
        shape(f"{path}.{nested.name}", nested, into)


def rows(file):
    into = {("package", file.package), ("syntax", file.syntax or "proto2")}
    for enum in file.enum_type:
        for v in enum.value:
            into.add((f"{enum.name}.{v.name}", v.number))
    for message in file.message_type:
        shape(message.name, message, into)
    return into


want = rows(descriptor_pb2.FileDescriptorProto.FromString(model_config_pb2.DESCRIPTOR.serialized_pb))
got = rows(compiled())
for row in sorted(want - got, key=str):
    print("missing or different:", row)
for row in sorted(got - want, key=str):
    print("not in Triton's schema:", row)
if want != got:
    sys.exit(1)
print(f"proto/model_config.proto matches Triton's schema ({len(want)} rows)")
