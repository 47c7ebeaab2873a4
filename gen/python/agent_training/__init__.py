"""Generated protobuf and gRPC code of the Agent Training Service contract."""
