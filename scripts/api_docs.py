"""Writes docs/api.md: every RPC with its proto comment and examples in three forms.

The forms are Python, TypeScript and grpcurl; the comments come from protos/, the text before
them from api_docs_header.md, the requests from EXAMPLES below. tests/test_api_docs.py fails when
docs/api.md is stale or an RPC has no example.

Usage: python scripts/api_docs.py [ROOT]   (writes ROOT/docs/api.md and ROOT/clients/node/test/
api_examples.ts, the TypeScript examples type-checked by the Node client's test build; default
the repository)
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from agent_training.v1 import service_pb2

ROOT = Path(__file__).resolve().parents[1]
SERVICE = service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"]
ADDRESS = "127.0.0.1:50051"
TS_CHECK = Path("clients/node/test/api_examples.ts")

# One example request per RPC, in proto3 JSON with the proto field names.
EXAMPLES: dict[str, dict[str, Any]] = {
    "TrainAgent": {
        "agent_id": "support-bot",
        "training_data": [
            {"input": "where is my card?", "expected_output": "card_arrival"},
            {"input": "I lost my card", "expected_output": "lost_or_stolen_card"},
        ],
        "training_type": "TRAINING_TYPE_SUPERVISED",
        "config": {"epochs": 10, "learning_rate": 0.02},
    },
    "GenerateSyntheticTrainingData": {
        "data_type": "SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES",
        "count": 1000,
        "parameters": {"difficulty": "DIFFICULTY_MEDIUM", "topics": ["billing", "support"]},
    },
    "GenerateSyntheticExamples": {
        "data_type": "SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES",
        "count": 100,
        "parameters": {"topics": ["billing"], "seed": 7},
    },
    "AnalyzeAndOptimize": {
        "agent_id": "support-bot",
        "optimization_goals": [
            "OPTIMIZATION_GOAL_IMPROVE_CALIBRATION",
            "OPTIMIZATION_GOAL_MINIMIZE_SIZE",
        ],
    },
    "AnalyzeAndOptimizeStream": {
        "request": {"agent_id": "support-bot", "dataset_id": "ds_0123456789abcdef"}
    },
    "GetAnalysisJob": {"analysis_id": "analysis_0123456789abcdef"},
    "WatchAnalysisJob": {"analysis_id": "analysis_0123456789abcdef"},
    "AdaptAgentBehavior": {
        "agent_id": "support-bot",
        "performance_metrics": {"success_rate": 0.85, "user_satisfaction": 0.9},
        "adaptation_strategy": "ADAPTATION_STRATEGY_THRESHOLD",
        "targets": {"success_rate": 0.9},
    },
    "CreateAgent": {"agent_id": "support-bot", "display_name": "Support bot"},
    "GetAgent": {"agent_id": "support-bot"},
    "ListAgents": {"page_size": 20},
    "DeleteAgent": {"agent_id": "support-bot", "force": True},
    "ListAgentVersions": {"agent_id": "support-bot"},
    "ActivateAgentVersion": {"agent_id": "support-bot", "version_id": "ver_0123456789abcdef"},
    "StartRollout": {
        "agent_id": "support-bot",
        "candidate_version_id": "ver_0123456789abcdef",
        "mode": "ROLLOUT_MODE_CANARY",
        "traffic_share": 0.1,
        "policy": {"confidence": 0.95, "min_feedback": 100},
    },
    "GetRollout": {"agent_id": "support-bot"},
    "UpdateRollout": {"agent_id": "support-bot", "traffic_share": 0.25},
    "PromoteRollout": {"agent_id": "support-bot", "reason": "better on every measure"},
    "AbortRollout": {"agent_id": "support-bot", "reason": "twice the fallbacks"},
    "GetTrainingJob": {"training_id": "train_0123456789abcdef"},
    "ListTrainingJobs": {"agent_id": "support-bot", "status": "TRAINING_STATUS_RUNNING"},
    "CancelTrainingJob": {"training_id": "train_0123456789abcdef"},
    "WatchTrainingJob": {"training_id": "train_0123456789abcdef", "from_sequence": 5},
    "PauseTrainingJob": {"training_id": "train_0123456789abcdef"},
    "ResumeTrainingJob": {"training_id": "train_0123456789abcdef"},
    "ListTrainingCheckpoints": {"training_id": "train_0123456789abcdef", "page_size": 10},
    "CreateVersionFromCheckpoint": {
        "training_id": "train_0123456789abcdef",
        "checkpoint_id": "epoch-2",
        "activate": True,
    },
    "ExportAgentVersion": {"agent_id": "support-bot", "version_id": "ver_0123456789abcdef"},
    "InvokeAgent": {"agent_id": "support-bot", "input": "my card never came"},
    "RecordFeedback": {
        "agent_id": "support-bot",
        "invocation_id": "inv_0123456789abcdef",
        "feedback": "correct",
    },
    "UploadDataset": {
        "name": "support-logs",
        "examples": [{"input": "where is my card?", "expected_output": "card_arrival"}],
    },
    "GetDataset": {"dataset_id": "ds_0123456789abcdef"},
    "ListDatasets": {},
    "ListDatasetExamples": {"dataset_id": "ds_0123456789abcdef", "page_size": 500},
    "DeleteDataset": {"dataset_id": "ds_0123456789abcdef"},
}

# Python client methods whose names or arguments differ from the request's.
PYTHON_CALLS = {
    "AnalyzeAndOptimizeStream": (
        "for response in client.analyze_and_optimize_stream(\n"
        '    agent_id="support-bot", dataset_id="ds_0123456789abcdef"\n):\n    print(response)'
    ),
    "UploadDataset": (
        'client.upload_dataset(\n    "support-logs",\n'
        '    [TrainingExample(input="where is my card?", expected_output="card_arrival")],\n)'
    ),
}

HEADER = (ROOT / "scripts/api_docs_header.md").read_text()


def rpc_comments() -> dict[str, str]:
    """The comment above each `rpc` line of service.proto."""
    text = (ROOT / "protos/agent_training/v1/service.proto").read_text()
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            pending.append(stripped[2:].strip())
            continue
        match = re.match(r"rpc (\w+)\(", stripped)
        if match:
            comments[match.group(1)] = " ".join(pending)
        pending = []
    return comments


def snake(name: str) -> str:
    """``TrainAgent`` -> ``train_agent``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel(name: str) -> str:
    """``train_agent`` -> ``trainAgent``."""
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def kind_of(method: Any) -> str:
    """Unary, server stream or client stream."""
    if method.client_streaming:
        return "client stream"
    return "server stream" if method.server_streaming else "unary"


def python_value(value: Any) -> str:
    """A Python literal in the house style (double quotes)."""
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)}: {python_value(v)}" for k, v in value.items()) + "}"
        )
    if isinstance(value, list):
        return "[" + ", ".join(python_value(item) for item in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def python_argument(key: str, value: Any) -> str:
    """One keyword argument on its own line; a list too long for the line gets one per item."""
    line = f"    {key}={python_value(value)}"
    if len(line) < 100 or not isinstance(value, list):
        return line
    items = "".join(f"        {python_value(item)},\n" for item in value)
    return f"    {key}=[\n{items}    ]"


def python_example(method: Any, request: dict[str, Any]) -> str:
    """The call in Python, with the typed client."""
    if method.name in PYTHON_CALLS:
        return PYTHON_CALLS[method.name]
    arguments = ", ".join(f"{key}={python_value(value)}" for key, value in request.items())
    call = f"client.{snake(method.name)}({arguments})"
    if len(call) > 84:  # as ruff formats it (it formats the blocks of docs/api.md too)
        inner = ",\n".join(python_argument(key, value) for key, value in request.items())
        call = f"client.{snake(method.name)}(\n{inner},\n)"
    if method.server_streaming:
        return f"for response in {call}:\n    print(response)"
    return f"response = {call}"


def ts_value(field: FieldDescriptor | None, value: Any, indent: str) -> str:
    """A TypeScript literal for one field's value (enums from `contract`, int64 as bigint)."""
    if field is not None and field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        prefix = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", enum.name).upper() + "_"
        if isinstance(value, list):
            return "[" + ", ".join(ts_value(field, v, indent) for v in value) + "]"
        return f"contract.{enum.name}.{value[len(prefix) :]}"
    if field is not None and field.type in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
    ):
        return f"{value}n"
    if isinstance(value, list):
        items = [ts_value(field, item, indent) for item in value]
        joined = ", ".join(items)
        if len(joined) < 70:
            return f"[{joined}]"
        inner = ",\n".join(f"{indent}  {item}" for item in items)
        return f"[\n{inner},\n{indent}]"
    if isinstance(value, dict):
        message = field.message_type if field is not None else None
        is_map = message is not None and message.GetOptions().map_entry
        return ts_object(None if is_map else message, value, indent, quote_keys=is_map)
    return json.dumps(value)


def ts_object(
    message: Descriptor | None, value: dict, indent: str, quote_keys: bool = False
) -> str:
    """A TypeScript object literal of a message (camelCase keys) or a map."""
    parts = []
    for key, item in value.items():
        field = message.fields_by_name.get(key) if message is not None else None
        name = json.dumps(key) if quote_keys and not key.isidentifier() else key
        name = camel(name) if message is not None else name
        parts.append(f"{name}: {ts_value(field, item, indent + '  ')}")
    joined = ", ".join(parts)
    if len(joined) < 80 and "\n" not in joined:
        return "{ " + joined + " }" if parts else "{}"
    inner = ",\n".join(f"{indent}  {part}" for part in parts)
    return "{\n" + inner + f",\n{indent}}}"


def ts_example(method: Any, request: dict[str, Any]) -> str:
    """The call in TypeScript, with `client.rpc`."""
    name = camel(snake(method.name))
    body = ts_object(method.input_type, request, "")
    if method.client_streaming:
        return (
            "async function* messages() {\n"
            f"  yield {ts_object(method.input_type, request, '  ')};\n}}\n"
            f"const response = await client.rpc.{name}(messages());"
        )
    if method.server_streaming:
        loop = f"for await (const response of client.rpc.{name}({body}))"
        return loop + " {\n  console.log(response);\n}"
    return f"const response = await client.rpc.{name}({body});"


def grpcurl_example(method: Any, request: dict[str, Any]) -> str:
    """The call with grpcurl and server reflection."""
    data = json.dumps(request)
    target = f"{SERVICE.full_name}/{method.name}"
    if len(data) > 60:
        data = json.dumps(request, indent=2)
        return f"grpcurl -plaintext -d @ {ADDRESS} {target} <<'EOF'\n{data}\nEOF"
    return f"grpcurl -plaintext -d '{data}' {ADDRESS} {target}"


def render_ts_check() -> str:
    """Every TypeScript example in one file that the Node client's test build type-checks."""
    bodies = []
    for method in SERVICE.methods:
        example = ts_example(method, EXAMPLES[method.name]).replace("\n", "\n  ")
        bodies.append(
            f"export async function {camel(snake(method.name))}Example() {{\n  {example}\n}}\n"
        )
    return (
        "// Generated by scripts/api_docs.py: the TypeScript examples of docs/api.md,\n"
        "// type-checked by the test build (npm test). Not run: their ids name nothing.\n"
        'import { AgentTrainingClient, contract } from "../src/index.js";\n\n'
        'const client = new AgentTrainingClient("127.0.0.1:50051");\n\n' + "\n".join(bodies)
    )


def render() -> str:
    """The whole of docs/api.md."""
    comments = rpc_comments()
    sections = [HEADER, "## RPCs\n"]
    for method in SERVICE.methods:
        request = EXAMPLES[method.name]
        sections.append(
            f"### {method.name} ({kind_of(method)})\n\n{comments.get(method.name, '')}\n\n"
            f"`{method.input_type.name}` → `{method.output_type.name}`\n\n"
            f"```python\n{python_example(method, request)}\n```\n\n"
            f"```ts\n{ts_example(method, request)}\n```\n\n"
            f"```sh\n{grpcurl_example(method, request)}\n```\n"
        )
    return "\n".join(sections)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    (out / "docs").mkdir(parents=True, exist_ok=True)
    (out / "docs/api.md").write_text(render())
    (out / TS_CHECK).parent.mkdir(parents=True, exist_ok=True)
    (out / TS_CHECK).write_text(render_ts_check())
