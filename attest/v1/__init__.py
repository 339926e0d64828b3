"""Generated protobuf and gRPC code for package attest.v1 (see scripts/gen_proto.py)."""
