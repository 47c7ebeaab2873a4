#!/usr/bin/env bash
# Generates the Python package agent_training.v1 from protos/ into the folder given (default
# gen/python): messages (_pb2.py), gRPC stubs (_pb2_grpc.py) and typed stubs (.pyi, mypy-protobuf).
# Usage: scripts/generate_protos.sh [OUT_DIR]   (run with the project's virtual environment first
# on PATH, so that the pinned grpcio-tools and mypy-protobuf plugins are used)
set -euo pipefail
out="${1:-gen/python}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
rm -rf "$out/agent_training"
mkdir -p "$out/agent_training/v1"
python -m grpc_tools.protoc \
  --proto_path=protos \
  --python_out="$out" \
  --grpc_python_out="$out" \
  --mypy_out="$out" \
  --mypy_grpc_out="$out" \
  protos/agent_training/v1/*.proto
printf '"""Generated protobuf and gRPC code of the Agent Training Service contract."""\n' \
  > "$out/agent_training/__init__.py"
printf '"""agent_training.v1: generated from protos/agent_training/v1 by make proto; do not edit."""\n' \
  > "$out/agent_training/v1/__init__.py"
touch "$out/agent_training/py.typed"
