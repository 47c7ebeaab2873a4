"""Limits and deadlines over a real channel: each limit answers its documented code, a call past
its deadline stops its work on the server, and the client's keepalive suits the server's."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import (
    analysis_pb2,
    service_pb2,
    service_pb2_grpc,
    synthetic_pb2,
    training_pb2,
)
from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_client.client import KEEPALIVE_OPTIONS
from agent_training_server.api.keepalive import keepalive_options
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples

TINY = {
    "max_message_bytes": 64 * 1024,
    "max_examples_per_request": 200,
    "max_text_length": 300,
    "max_outputs_per_agent": 4,
    "max_batch_size": 8,
    "max_context_turns": 2,
    "max_concurrent_streams": 1,
}


@pytest.fixture(scope="module")
def limited(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("limits"), **TINY))
    yield running
    running.stop()


@pytest.fixture
def client(limited: ServerThread) -> Iterator[AgentTrainingClient]:
    # The client accepts more than the server, so the server's limit is the one tested.
    with AgentTrainingClient(limited.address, timeout=60, max_message_bytes=1 << 22) as made:
        yield made


def two_outputs(count: int = 2) -> list[training_pb2.TrainingExample]:
    return [
        training_pb2.TrainingExample(input=f"text {i}", expected_output=f"out{i % 2}")
        for i in range(count)
    ]


def test_message_over_the_size_limit_is_resource_exhausted_with_a_hint(client):
    error = expect_error(client.invoke_agent, agent_id="a", input="x" * 100_000)
    assert error.status_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.code == "MESSAGE_TOO_LARGE" and "UploadDataset" in error.hint
    assert not error.retryable


LONG_TEXT = training_pb2.TrainingExample(input="y" * 301, expected_output="out0")
FIVE_OUTPUTS = [
    training_pb2.TrainingExample(input=f"t{i}", expected_output=f"o{i}") for i in range(5)
]


@pytest.mark.parametrize(
    ("examples", "field"),
    [
        (two_outputs(201), "training_data"),
        ([*two_outputs(), LONG_TEXT], "training_data[2].input"),
        (FIVE_OUTPUTS, "training_data"),
    ],
    ids=["examples per request", "text length", "outputs per agent"],
)
def test_request_limits_are_invalid_argument_and_not_retryable(client, examples, field):
    with contextlib.suppress(AgentTrainingError):
        client.create_agent(agent_id="limits-request")
    error = expect_error(client.train_agent, agent_id="limits-request", training_data=examples)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert not error.retryable and error.retry_delay_seconds is None
    assert field in [v.field for v in error.field_violations], error.field_violations


def test_batch_and_context_limits(client):
    error = expect_error(client.invoke_agent, agent_id="a", inputs=["q"] * 9)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    error = expect_error(client.invoke_agent, agent_id="a", input="q", context=["a", "b", "c"])
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in error.field_violations] == ["context"]


def test_open_streams_past_the_limit_are_refused_until_one_closes(limited, client):
    request = {"data_type": synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES, "chunk_size": 10}
    first = client.generate_synthetic_training_data(count=1_000_000, **request)
    next(first)  # the stream is open and holds the only slot
    error = expect_error(client.generate_synthetic_training_data, count=10, **request)
    assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert error.code == "TOO_MANY_STREAMS"
    assert error.retryable and error.retry_delay_seconds and error.retry_delay_seconds > 0
    first.close()
    deadline = time.monotonic() + 10
    while True:  # the slot frees as soon as the server notices the cancellation
        try:
            assert list(client.generate_synthetic_training_data(count=10, **request))
            break
        except AgentTrainingError as refused:
            assert refused.code == "TOO_MANY_STREAMS" and time.monotonic() < deadline
            time.sleep(0.05)


def test_tenant_job_limit_is_retryable_and_frees_when_the_job_ends(tmp_path):
    server = ServerThread(make_config(tmp_path, max_jobs_per_tenant=1))
    with AgentTrainingClient(server.address, timeout=60) as client:
        client.create_agent(agent_id="limits-tenant")
        examples = banking_examples(per_intent=20)[:40]
        slow = training_pb2.TrainingConfig(epochs=1000, validation_split=0)
        events = client.train_agent(agent_id="limits-tenant", training_data=examples, config=slow)
        training_id = next(events).training_id
        error = expect_error(
            client.train_agent,
            agent_id="limits-tenant",
            training_data=examples,
            config=training_pb2.TrainingConfig(epochs=1),
        )
        assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert error.code == "TENANT_JOB_LIMIT" and error.retryable
        assert error.retry_delay_seconds == 10.0
        client.cancel_training_job(training_id=training_id)
        list(events)  # the stream ends with the cancelled job's finished event
        accepted = client.train_agent(agent_id="limits-tenant", training_data=examples, config=slow)
        assert next(accepted).HasField("accepted")
    server.stop()


def test_full_queue_is_retryable_with_retry_info(tmp_path):
    server = ServerThread(make_config(tmp_path, max_queued_jobs=0))
    try:
        with AgentTrainingClient(server.address, timeout=30) as client:
            client.create_agent(agent_id="queue")
            error = expect_error(
                client.train_agent, agent_id="queue", training_data=banking_examples()
            )
            assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert error.code == "QUEUE_FULL" and error.retryable and error.retry_delay_seconds
    finally:
        server.stop()


# Deadlines -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> Iterator[tuple[ServerThread, str]]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("deadlines")))
    with AgentTrainingClient(running.address, timeout=120) as client:
        client.create_agent(agent_id="deadline")
        examples = banking_examples(per_intent=200)
        list(client.train_agent(agent_id="deadline", training_data=examples))
    yield running, "deadline"
    running.stop()


def becomes_idle(within: float, window: float = 0.5) -> bool:
    """Whether the whole process (the server runs in a thread of it) uses under a fifth of a
    core over some `window` in the next `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        start = time.process_time()
        time.sleep(window)
        if time.process_time() - start < window / 5:
            return True
    return False


def test_a_heavy_call_past_its_deadline_stops_its_work(analysed):
    server, agent_id = analysed
    request = service_pb2.AnalyzeAndOptimizeRequest(
        agent_id=agent_id, optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_ACCURACY]
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.AnalyzeAndOptimize(request, timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 5
        # Unstopped, six retrainings keep a core busy for half a minute; a stopped search
        # leaves the process idle once the unit of work in progress ends.
        assert becomes_idle(within=6.0)
        # And the server answers the same work at once when given the time.
        done = stub.AnalyzeAndOptimize(
            service_pb2.AnalyzeAndOptimizeRequest(agent_id=agent_id), timeout=60
        )
        assert done.analysis.accuracy > 0.5


def test_a_generation_stream_past_its_deadline_frees_its_slot(limited):
    with grpc.insecure_channel(limited.address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        request = service_pb2.GenerateSyntheticTrainingDataRequest(
            data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES,
            count=10_000_000,
            chunk_size=100,  # about 16 KB: chunks fit the server's 64 KB messages
        )
        with pytest.raises(grpc.RpcError) as caught:
            for _chunk in stub.GenerateSyntheticTrainingData(request, timeout=0.5):
                pass  # read as fast as it comes: only the deadline ends it
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert becomes_idle(within=3.0)
        small = service_pb2.GenerateSyntheticTrainingDataRequest(
            data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES, count=5
        )
        # The only stream slot is free again.
        assert list(stub.GenerateSyntheticTrainingData(small, timeout=10))


def test_an_upload_cancelled_midway_stores_nothing(limited, client):
    def chunks() -> Iterator[service_pb2.UploadDatasetRequest]:
        yield service_pb2.UploadDatasetRequest(name="cut-short", examples=two_outputs(10))
        yield service_pb2.UploadDatasetRequest(examples=two_outputs(10))
        time.sleep(5)  # the deadline passes while the client holds the stream open
        yield service_pb2.UploadDatasetRequest(examples=two_outputs(10))

    with grpc.insecure_channel(limited.address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.UploadDataset(chunks(), timeout=1.0)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.5)
    assert "cut-short" not in [d.name for d in client.list_datasets().datasets]
    assert row_count(limited, "dataset_examples") == 0


def row_count(server: ServerThread, table: str) -> int:
    """Rows of a table, read through a connection of our own, as an operator would."""
    path = server.config.database_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as database:
        return database.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


# Keepalive -------------------------------------------------------------------------------------


def test_client_keepalive_matches_what_the_server_accepts(tmp_path):
    server = dict(keepalive_options(make_config(tmp_path)))
    client = dict(KEEPALIVE_OPTIONS)
    assert (
        client["grpc.keepalive_time_ms"] >= server["grpc.http2.min_ping_interval_without_data_ms"]
    )
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc.keepalive_permit_without_calls"] == 1
