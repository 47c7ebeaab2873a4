"""Hostile input over a real channel: ids that try to leave the data folder, bytes that are not
our messages, invalid UTF-8, control characters, and texts made of one token repeated."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_status import rpc_status

from agent_training.v1 import errors_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import TRACE_ID, ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples

SERVICE = "/agent_training.v1.AgentTrainingService/"
SERVER_SOURCES = Path(__file__).resolve().parents[1] / "server"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("hostile")))
    with AgentTrainingClient(running.address, timeout=60) as client:
        client.create_agent(agent_id="victim")
        list(client.train_agent(agent_id="victim", training_data=banking_examples()))
    yield running
    running.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=60) as made:
        yield made


def data_files(server: ServerThread) -> set[Path]:
    """Every file under the data folder's parent: traversal would write or delete there."""
    root = server.config.data_dir.parent
    return {path for path in root.rglob("*") if "-wal" not in path.name and "-shm" not in path.name}


HOSTILE_IDS = [
    "../victim",
    "..",
    "victim/../../etc",
    "victim\n",  # "$" in a pattern matched with re.match accepts a trailing newline
    "/etc/passwd",
    "victim\\..\\x",
    ".hidden",
    "victim\x00",
    "v\u0456ctim",  # Cyrillic i: looks like an existing id
    "a" * 65,
]


@pytest.mark.parametrize("agent_id", HOSTILE_IDS, ids=repr)
def test_ids_outside_the_pattern_are_refused_before_any_file_is_touched(server, client, agent_id):
    before = data_files(server)
    for call in (client.create_agent, client.get_agent, client.delete_agent):
        error = expect_error(call, agent_id=agent_id)
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
        assert error.field_violations[0].field == "agent_id"
    error = expect_error(client.invoke_agent, agent_id="victim", version_id=agent_id, input="hi")
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert data_files(server) == before
    assert client.get_agent("victim").active_version_id


def raw_call(server: ServerThread, method: str, payload: bytes, kind: str) -> grpc.RpcError:
    """Send bytes as they are (no serializer) to a method; return the error it must give."""
    with grpc.insecure_channel(server.address) as channel:
        if kind == "unary":
            call = channel.unary_unary(SERVICE + method)
            invoke = lambda: call(payload, timeout=10)  # noqa: E731
        elif kind == "server_stream":
            stream = channel.unary_stream(SERVICE + method)
            invoke = lambda: list(stream(payload, timeout=10))  # noqa: E731
        else:
            upload = channel.stream_unary(SERVICE + method)
            invoke = lambda: upload(iter([payload]), timeout=10)  # noqa: E731
        with pytest.raises(grpc.RpcError) as caught:
            invoke()
        return caught.value


def error_object(error: grpc.RpcError) -> errors_pb2.ErrorDetail:
    status = rpc_status.from_call(error)
    assert status is not None, f"{error.code()} without rich details: {error.details()}"
    for packed in status.details:
        if packed.Is(errors_pb2.ErrorDetail.DESCRIPTOR):
            detail = errors_pb2.ErrorDetail()
            packed.Unpack(detail)
            return detail
    raise AssertionError("no ErrorDetail in the status")


# agent_id (field 1) holding bytes that are not UTF-8.
BAD_UTF8 = b"\x0a\x04\xff\xfe\xc3\x28"


@pytest.mark.parametrize(
    ("method", "kind"),
    [("GetAgent", "unary"), ("WatchTrainingJob", "server_stream"), ("UploadDataset", "upload")],
)
@pytest.mark.parametrize("payload", [BAD_UTF8, b"\xff" * 7, b"\x0a\xff\xff\xff\xff\x0f"])
def test_bytes_that_do_not_parse_are_invalid_argument_with_the_error_object(
    server, method, kind, payload
):
    error = raw_call(server, method, payload, kind)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    detail = error_object(error)
    assert detail.code == "MALFORMED_REQUEST" and detail.hint and not detail.retryable
    assert TRACE_ID.match(detail.trace_id)


def test_control_characters_are_refused_but_tab_and_newline_are_text(client):
    error = expect_error(client.invoke_agent, agent_id="victim", input="card \x1b[2J arrived?")
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "U+001B" in error.field_violations[0].description
    examples = [
        *banking_examples(per_intent=5),
        training_pb2.TrainingExample(input="lost\x00card", expected_output="lost_or_stolen_card"),
    ]
    error = expect_error(client.train_agent, agent_id="victim", training_data=examples)
    assert [v.field for v in error.field_violations] == [
        f"training_data[{len(examples) - 1}].input"
    ]
    answer = client.invoke_agent(agent_id="victim", input="where is\tmy card?\r\nstill waiting")
    assert answer.predictions[0].output


def test_huge_repeated_tokens_are_answered_promptly(server, client):
    limit = server.config.max_text_length
    texts = [
        ("card " * (limit // 5))[:limit],
        "a" * limit,
        ("🙂" * limit)[:limit],
        (" " * (limit - 1)) + "x",
    ]
    started = time.monotonic()
    answer = client.invoke_agent(agent_id="victim", inputs=texts * 8)
    assert len(answer.predictions) == len(texts) * 8
    assert time.monotonic() - started < 30
    # The same texts train too: n-gram features of one long token stay bounded.
    examples = [
        training_pb2.TrainingExample(input=text, expected_output=f"out{i % 2}")
        for i, text in enumerate(texts * 3)
    ]
    client.create_agent(agent_id="repeats")
    events = list(client.train_agent(agent_id="repeats", training_data=examples))
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED


def test_many_repeated_items_get_a_short_answer(client):
    request_topics = ["nope"] * 100_000
    error = expect_error(
        client.generate_synthetic_examples,
        data_type=1,
        count=1,
        parameters={"topics": request_topics},
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="victim",
        adaptation_strategy=1,
        performance_metrics={f"m{i}": 0.5 for i in range(10_000)},
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert len(error.field_violations) <= 100
    # Thousands of bad inputs: those that fit listed, the rest counted in the message.
    error = expect_error(client.invoke_agent, agent_id="victim", inputs=[" "] * 4096)
    assert 10 < len(error.field_violations) <= 100 and " more" in error.message


UNSAFE_LOADS = re.compile(
    r"torch\.load\(|pickle\.loads?\(|joblib|np\.load\((?![^)]*allow_pickle=False)"
    r"|from_pretrained\((?![^)]*use_safetensors=True)[^)]*\)\s*$"
)


def test_no_unpickling_loader_in_the_server():
    """Weights and caches load from safetensors or allow_pickle=False numpy files only."""
    offenders = []
    for path in SERVER_SOURCES.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "AutoTokenizer" in line:
                continue  # tokenizers load JSON and text files
            if UNSAFE_LOADS.search(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, offenders
