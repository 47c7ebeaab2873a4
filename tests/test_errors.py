"""Invalid input: INVALID_ARGUMENT with field violations, a hint and the server span's trace_id."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agent_training.v1 import errors_pb2, service_pb2, service_pb2_grpc, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config

EXAMPLES = [
    training_pb2.TrainingExample(input="where is my card", expected_output="card_arrival"),
    training_pb2.TrainingExample(input="I lost my card", expected_output="lost_card"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One server for the module: a refused call must leave it as it was, so they can share."""
    running = ServerThread(make_config(tmp_path_factory.mktemp("errors")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=30) as made:
        made.create_agent(agent_id="kept", display_name="must not change")
        yield made


def _snapshot(client: AgentTrainingClient) -> list[tuple]:
    """Everything stored that a rejected call could have touched."""
    rows = []
    for agent in client.iter_agents():
        versions = client.list_agent_versions(agent.agent_id).versions
        rows.append((agent.SerializeToString(deterministic=True), len(versions)))
    return rows


INVALID_CALLS = {
    "empty agent id": ("get_agent", {"agent_id": ""}, "agent_id"),
    "oversized agent id": ("get_agent", {"agent_id": "a" * 65}, "agent_id"),
    "id with bad characters": ("create_agent", {"agent_id": "bad id!"}, "agent_id"),
    "unknown enum value": (
        "train_agent",
        {"agent_id": "kept", "training_data": EXAMPLES, "training_type": 99},
        "training_type",
    ),
    "negative epochs": (
        "train_agent",
        {
            "agent_id": "kept",
            "training_data": EXAMPLES,
            "config": training_pb2.TrainingConfig(epochs=-1),
        },
        "config.epochs",
    ),
    "NaN learning rate": (
        "train_agent",
        {
            "agent_id": "kept",
            "training_data": EXAMPLES,
            "config": training_pb2.TrainingConfig(learning_rate=math.nan),
        },
        "config.learning_rate",
    ),
    "missing training data": ("train_agent", {"agent_id": "kept"}, "training_data"),
    "missing agent id on train": ("train_agent", {"training_data": EXAMPLES}, "agent_id"),
    "blank example input": (
        "train_agent",
        {
            "agent_id": "kept",
            "training_data": [training_pb2.TrainingExample(input=" ", expected_output="x")],
        },
        "training_data[0].input",
    ),
    "bad feedback": (
        "train_agent",
        {
            "agent_id": "kept",
            "training_data": [
                training_pb2.TrainingExample(input="hi", expected_output="x", feedback="meh")
            ],
        },
        "training_data[0].feedback",
    ),
    "threshold out of range": (
        "create_agent",
        {"agent_id": "new", "default_behavior": {"confidence_threshold": 1.5}},
        "default_behavior.confidence_threshold",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID_CALLS))
def test_invalid_input_is_rejected_with_violation_hint_and_trace(
    case: str, server: ServerThread, client: AgentTrainingClient
) -> None:
    method, fields, bad_field = INVALID_CALLS[case]
    before = _snapshot(client)

    error = expect_error(getattr(client, method), **fields)

    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.code == "INVALID_ARGUMENT"
    assert bad_field in [v.field for v in error.field_violations]
    assert all(v.description for v in error.field_violations)
    assert not error.retryable
    assert server.has_server_span(error.trace_id)
    assert _snapshot(client) == before


def test_every_violation_is_reported_at_once(client: AgentTrainingClient) -> None:
    config = training_pb2.TrainingConfig(epochs=0, batch_size=0, validation_split=0.9)
    error = expect_error(client.train_agent, agent_id="", training_data=EXAMPLES, config=config)
    fields = {v.field for v in error.field_violations}
    assert {"agent_id", "config.epochs", "config.batch_size", "config.validation_split"} <= fields


def test_rich_status_details_are_standard(server: ServerThread) -> None:
    """A client that knows nothing of ours still reads ErrorInfo and BadRequest."""
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetAgent(service_pb2.GetAgentRequest(agent_id=""))
    status = rpc_status.from_call(caught.value)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    kinds = {}
    for packed in status.details:
        for message in (
            errors_pb2.ErrorDetail(),
            error_details_pb2.ErrorInfo(),
            error_details_pb2.BadRequest(),
        ):
            if packed.Is(message.DESCRIPTOR):
                packed.Unpack(message)
                kinds[type(message).__name__] = message
    assert set(kinds) == {"ErrorDetail", "ErrorInfo", "BadRequest"}
    assert kinds["ErrorInfo"].reason == kinds["ErrorDetail"].code == "INVALID_ARGUMENT"
    assert kinds["ErrorInfo"].metadata["trace_id"] == kinds["ErrorDetail"].trace_id
    assert kinds["ErrorDetail"].trace_id in caught.value.details()


def test_not_found_carries_trace_of_server_span(server: ServerThread, client) -> None:
    error = expect_error(client.get_agent, "nobody")
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert server.has_server_span(error.trace_id)
    assert not error.field_violations
