"""Property-based fuzzing of every RPC of the contract, over a real channel.

Every method is found from the service descriptor, never listed by hand. For each, hypothesis
sends three kinds of request as raw bytes (a generic channel call with no serializer):

- a random message built field by field from the request's descriptor, its strings drawn from
  the ids that exist and from hostile text (traversal, control characters, lookalikes, huge);
- a valid request, serialised and then mutated (bytes flipped, cut, inserted, repeated);
- random bytes.

Properties: no INTERNAL or UNKNOWN status; every error carries the error object with a trace_id;
a rejected call leaves the store as it was (SQLite contents compared, read by a connection of our
own); the server still answers health checks. The server has tiny limits and refuses training
jobs (max_queued_jobs 0), so that heavy work stays small and nothing writes in the background.
"""

from __future__ import annotations

import collections
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_training.v1 import errors_pb2, service_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import TRACE_ID, ServerThread, make_config
from tests.test_training import banking_examples

SERVICE = service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"]
METHODS = list(SERVICE.methods)
EXAMPLES_PER_METHOD = 170
"""Hypothesis examples per method; each sends three requests."""
HEAVY_METHODS = {
    "AnalyzeAndOptimize",
    "AnalyzeAndOptimizeStream",
    "AdaptAgentBehavior",
    "WatchAnalysisJob",
}
"""Methods whose valid requests do real work (an analysis measures latency): fewer examples."""
MINIMUM_REQUESTS = 10_000
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
STREAM_MESSAGES_READ = 3
"""Server-stream responses read before the call is cancelled (a job stream can be long)."""
CALL_TIMEOUT = 5.0
"""A valid heavy call (maximize_accuracy retrains six times) may pass it: the client's own
DEADLINE_EXCEEDED is an outcome, not a server failure, and the server stops that work."""
UNTOUCHED_TABLES = {"invocations", "analysis_jobs"}
"""Written in the background after successful calls (InvokeAgent's answers are stored behind;
an analysis job runs on after its stream), so they may change while a later call fails."""

TINY_LIMITS = {
    "max_message_bytes": 256 * 1024,
    "max_examples_per_request": 20,
    "max_text_length": 200,
    "max_outputs_per_agent": 10,
    "max_batch_size": 8,
    "max_page_size": 20,
    "max_synthetic_count": 50,
    "max_unary_synthetic_count": 20,
    "max_dataset_examples": 50,
    "max_direct_analysis_examples": 20,
    "max_concurrent_generations": 2,
    "max_context_turns": 3,
    "max_queued_jobs": 0,
}


class Fixture:
    """The fuzzed server, the ids that exist in it, and what was sent."""

    def __init__(self, server: ServerThread, ids: dict[str, str]) -> None:
        self.server = server
        self.ids = ids
        self.channel = grpc.insecure_channel(server.address)
        self.requests: collections.Counter[str] = collections.Counter()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.store = StoreProbe(server.config.data_dir / "agent_training.sqlite3")


class StoreProbe:
    """Reads the store's database through its own connection, as an operator would."""

    def __init__(self, path: Path) -> None:
        self._database = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        self._seen_version = -1
        self._seen_digest = ""

    def version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version)."""
        return self._database.execute("PRAGMA data_version").fetchone()[0]

    def digest(self) -> str:
        """A digest of every row of every table but UNTOUCHED_TABLES."""
        version = self.version()
        if version == self._seen_version:
            return self._seen_digest
        hasher = hashlib.sha256()
        tables = [
            row[0]
            for row in self._database.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        for table in tables:
            if table in UNTOUCHED_TABLES:
                continue
            hasher.update(table.encode())
            rows = sorted(repr(row) for row in self._database.execute(f"SELECT * FROM {table}"))
            hasher.update("\n".join(rows).encode())
        self._seen_version, self._seen_digest = version, hasher.hexdigest()
        return self._seen_digest


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> Iterator[Fixture]:
    data = tmp_path_factory.mktemp("fuzz")
    ids = _populate(data)
    server = ServerThread(make_config(data, workers=1, **TINY_LIMITS))
    fixture = Fixture(server, ids)
    yield fixture
    fixture.channel.close()
    server.stop()


def _populate(data: Path) -> dict[str, str]:
    """Make one of everything with a server of default limits (the fuzzed one refuses jobs)."""
    server = ServerThread(make_config(data, workers=1))
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="fuzz-agent")
            examples = banking_examples(per_intent=8)
            events = list(client.train_agent(agent_id="fuzz-agent", training_data=examples))
            answer = client.invoke_agent(agent_id="fuzz-agent", input="where is my card")
            dataset = client.upload_dataset("fuzz-set", examples[:10])
            return {
                "agent_id": "fuzz-agent",
                "version_id": events[-1].finished.version_id,
                "training_id": events[-1].training_id,
                "dataset_id": dataset.dataset_id,
                "invocation_id": answer.predictions[0].invocation_id,
            }
    finally:
        server.stop()


# Strategies ------------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "",
    " ",
    "../../etc/passwd",
    "..",
    "a/../b",
    "x" * 65,
    "x" * 201,
    "agent\n",
    "nul\x00byte",
    "esc\x1b[2J",
    "tab\there",
    "v\u0456ctim",
    "\u202eevil",
    "🙂" * 30,
    "correct",
    "incorrect",
    "0.5",
    "-2",
    "nan",
    "inf",
    "1e309",
    "card_arrival",
    "{greeting}",
    "[[",
    "%s%n",
    "' OR 1=1 --",
    "ZXlKaFpuUmxjaUk2SUNKNkluMD0",
    "sug_eyJ2IjoiYSJ9",
]


def _strings(ids: dict[str, str], protected: bool) -> st.SearchStrategy[str]:
    known = [value for key, value in ids.items() if not (protected and key == "agent_id")]
    return st.one_of(
        st.sampled_from([*known, "fuzz-new", "fuzz-doomed"]),
        st.sampled_from(HOSTILE_TEXT),
        st.text(max_size=24),
    )


def _field_values(
    field: descriptor.FieldDescriptor, strings: st.SearchStrategy[str], depth: int
) -> st.SearchStrategy[Any]:
    kind = descriptor.FieldDescriptor
    if field.type == kind.TYPE_STRING:
        return strings
    if field.type == kind.TYPE_BYTES:
        return st.binary(max_size=24)
    if field.type == kind.TYPE_BOOL:
        return st.booleans()
    if field.type in (kind.TYPE_DOUBLE, kind.TYPE_FLOAT):
        return st.one_of(st.floats(width=32), st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e9]))
    if field.type == kind.TYPE_ENUM:
        return st.integers(-1, len(field.enum_type.values) + 1)
    if field.type == kind.TYPE_MESSAGE:
        return _messages(field.message_type, strings, depth + 1)
    bits = 64 if field.type in (kind.TYPE_INT64, kind.TYPE_UINT64, kind.TYPE_SINT64) else 32
    unsigned = field.type in (kind.TYPE_UINT32, kind.TYPE_UINT64, kind.TYPE_FIXED32)
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.one_of(st.integers(-3, 30), st.integers(low, high))


def _messages(
    message_type: descriptor.Descriptor, strings: st.SearchStrategy[str], depth: int = 0
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(message_type)
    if depth > 3:
        return st.just(cls())
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in message_type.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = (
                field.message_type.fields_by_name["key"],
                field.message_type.fields_by_name["value"],
            )
            optional[field.name] = st.dictionaries(
                _field_values(key, strings, depth), _field_values(value, strings, depth), max_size=3
            )
        elif field.is_repeated:
            optional[field.name] = st.lists(_field_values(field, strings, depth), max_size=3)
        else:
            optional[field.name] = _field_values(field, strings, depth)
    return st.fixed_dictionaries({}, optional=optional).map(lambda values: _build(cls, values))


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    made = cls()
    for name, value in values.items():
        target = getattr(made, name)
        if isinstance(value, dict):
            target.update(value)
        elif isinstance(value, list):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(made, name, value)
    return made


def _valid_request(method: str, ids: dict[str, str]) -> Message:
    """A request of `method` the server accepts (before mutation)."""
    agent = ids["agent_id"]
    example = training_pb2.TrainingExample(input="hi", expected_output="a")
    other = training_pb2.TrainingExample(input="bye", expected_output="b")
    fields: dict[str, dict[str, Any]] = {
        "TrainAgent": {"agent_id": agent, "training_data": [example, other]},
        "GenerateSyntheticTrainingData": {"data_type": 1, "count": 5},
        "GenerateSyntheticExamples": {"data_type": 1, "count": 5},
        "AnalyzeAndOptimize": {"agent_id": agent, "optimization_goals": [4]},
        "AnalyzeAndOptimizeStream": {"request": {"agent_id": agent}},
        "AdaptAgentBehavior": {
            "agent_id": agent,
            "adaptation_strategy": 2,
            "performance_metrics": {"success_rate": 0.8},
            "targets": {"success_rate": 0.9},
            "dry_run": True,
        },
        "CreateAgent": {"agent_id": "fuzz-new", "display_name": "new"},
        "DeleteAgent": {"agent_id": "fuzz-doomed"},
        "ListAgentVersions": {"agent_id": agent},
        "ActivateAgentVersion": {"agent_id": agent, "version_id": ids["version_id"]},
        "InvokeAgent": {"agent_id": agent, "input": "my card is lost"},
        "RecordFeedback": {
            "agent_id": agent,
            "invocation_id": ids["invocation_id"],
            "feedback": "correct",
        },
        "UploadDataset": {"name": "fuzz-upload", "examples": [example]},
        "ListDatasetExamples": {"dataset_id": ids["dataset_id"]},
        "WatchTrainingJob": {"training_id": ids["training_id"]},
    }
    for name in ("GetAgent",):
        fields[name] = {"agent_id": agent}
    for name in ("GetTrainingJob", "CancelTrainingJob"):
        fields[name] = {"training_id": ids["training_id"]}
    fields["GetDataset"] = {"dataset_id": ids["dataset_id"]}
    fields["DeleteDataset"] = {"dataset_id": "ds_0000000000000000"}  # keep the real one
    method_descriptor = SERVICE.methods_by_name[method]
    cls = message_factory.GetMessageClass(method_descriptor.input_type)
    return cls(**fields.get(method, {}))


@st.composite
def _mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "set"]))
        position = draw(st.integers(0, len(data)))
        if operation == "flip" and data:
            data[min(position, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif operation == "cut":
            del data[position : position + draw(st.integers(1, 8))]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "repeat":
            data[position:position] = data[position : position + draw(st.integers(1, 16))]
        elif data:
            data[min(position, len(data) - 1)] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF]))
    return bytes(data)


# Sending and checking --------------------------------------------------------------------------


def _send(fixture: Fixture, method: descriptor.MethodDescriptor, payloads: list[bytes]) -> Any:
    """Send raw request bytes; return the RpcError, or None when the call succeeded."""
    path = f"/{SERVICE.full_name}/{method.name}"
    channel = fixture.channel
    try:
        if method.client_streaming:
            channel.stream_unary(path)(iter(payloads), timeout=CALL_TIMEOUT)
        elif method.server_streaming:
            call = channel.unary_stream(path)(payloads[0], timeout=CALL_TIMEOUT)
            for count, _response in enumerate(call, 1):
                if count >= STREAM_MESSAGES_READ:
                    call.cancel()
                    break
        else:
            channel.unary_unary(path)(payloads[0], timeout=CALL_TIMEOUT)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED and "Locally cancelled" in error.details():
            return None  # we cancelled a stream we had read enough of
        return error
    return None


def _check_error(error: grpc.RpcError, method: str) -> None:
    assert error.code() not in FORBIDDEN, f"{method}: {error.code()} {error.details()}"
    status = rpc_status.from_call(error)
    assert status is not None, f"{method}: {error.code()} without details: {error.details()}"
    details = [packed for packed in status.details if packed.Is(errors_pb2.ErrorDetail.DESCRIPTOR)]
    assert details, f"{method}: no ErrorDetail in {error.code()}"
    detail = errors_pb2.ErrorDetail()
    details[0].Unpack(detail)
    assert detail.code and detail.message and detail.hint, f"{method}: {detail}"
    assert TRACE_ID.match(detail.trace_id), f"{method}: trace_id {detail.trace_id!r}"


def _exchange(fixture: Fixture, method: descriptor.MethodDescriptor, payloads: list[bytes]) -> None:
    before = fixture.store.digest()
    error = _send(fixture, method, payloads)
    fixture.requests[method.name] += 1
    if error is None:
        fixture.outcomes["OK"] += 1
        return
    if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and not error.trailing_metadata():
        # The client's own timer: whether the call had written anything is unknown.
        fixture.outcomes["DEADLINE_EXCEEDED (client)"] += 1
        return
    fixture.outcomes[error.code().name] += 1
    _check_error(error, method.name)
    assert fixture.store.digest() == before, f"{method.name}: a rejected call changed the store"


def _assert_serving(fixture: Fixture) -> None:
    health = health_pb2_grpc.HealthStub(fixture.channel)
    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_fuzz_every_method(fuzzed: Fixture, method: descriptor.MethodDescriptor) -> None:
    protected = method.name in ("DeleteAgent", "DeleteDataset")
    strings = _strings(fuzzed.ids, protected)
    valid = _valid_request(method.name, fuzzed.ids).SerializeToString()
    examples = EXAMPLES_PER_METHOD // (4 if method.name in HEAVY_METHODS else 1)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(
        message=_messages(method.input_type, strings),
        mutated=_mutated(valid),
        noise=st.binary(max_size=64),
        extra=st.lists(st.binary(max_size=32), max_size=2),
    )
    def exchange_three(message: Message, mutated: bytes, noise: bytes, extra: list[bytes]) -> None:
        _exchange(fuzzed, method, [message.SerializeToString(), *extra])
        _exchange(fuzzed, method, [mutated, *extra])
        _exchange(fuzzed, method, [noise])

    exchange_three()
    _assert_serving(fuzzed)


def test_fuzz_sent_enough_requests(fuzzed: Fixture, capsys: pytest.CaptureFixture[str]) -> None:
    if set(fuzzed.requests) != {method.name for method in METHODS}:
        pytest.skip("only part of the fuzz run was selected")
    total = sum(fuzzed.requests.values())
    with capsys.disabled():
        print(
            f"\nfuzz: {total} requests over {len(METHODS)} methods;"
            f" outcomes {dict(fuzzed.outcomes)}"
        )
    assert total >= MINIMUM_REQUESTS
    _assert_serving(fuzzed)
