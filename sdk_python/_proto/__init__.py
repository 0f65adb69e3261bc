"""Generated protobuf and gRPC stubs (see scripts/gen_proto.sh). Do not edit."""
