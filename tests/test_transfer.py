"""The transfer paradigm over a real channel: from the pretrained encoder or another agent."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples

TRANSFER = training_pb2.TRAINING_TYPE_TRANSFER
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED
BASE_INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate")
NEW_INTENTS = ("top_up_failed", "cash_withdrawal_charge", "pin_blocked")


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[AgentTrainingClient]:
    server = ServerThread(make_config(tmp_path_factory.mktemp("transfer"), workers=1))
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made
    server.stop()


def finished(client, agent_id: str, examples, **config) -> training_pb2.TrainingFinished:
    events = list(
        client.train_agent(
            agent_id=agent_id,
            training_data=examples,
            training_type=TRANSFER,
            config=training_pb2.TrainingConfig(**config),
            timeout=300,
        )
    )
    return events[-1].finished


def test_transfer_from_another_agent_reuses_its_encoder(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="base")
    base_events = list(
        client.train_agent(
            agent_id="base",
            training_data=banking_examples(BASE_INTENTS, per_intent=5),
            training_type=training_pb2.TRAINING_TYPE_FEW_SHOT,
            timeout=300,
        )
    )
    base_version = base_events[-1].finished.version_id

    client.create_agent(agent_id="derived")
    result = finished(
        client,
        "derived",
        banking_examples(NEW_INTENTS, per_intent=8),
        base_agent_id="base",
        epochs=2,
        freeze_encoder_epochs=1,
    )
    assert result.status == SUCCEEDED, result.error
    version = client.list_agent_versions("derived").versions[0]
    assert version.training_type == TRANSFER
    assert sorted(version.outputs) == sorted(NEW_INTENTS)
    assert version.manifest.config.base_agent_id == "base"
    assert version.manifest.config.base_version_id == base_version  # pinned at submit
    assert version.manifest.config.freeze_encoder_epochs == 1
    answer = client.invoke_agent(agent_id="derived", input="my top-up did not go through")
    assert answer.predictions[0].output == "top_up_failed"


def test_transfer_from_the_pretrained_encoder(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="fresh-transfer")
    result = finished(
        client,
        "fresh-transfer",
        banking_examples(NEW_INTENTS, per_intent=8),
        epochs=2,
        validation_split=0.25,
    )
    assert result.status == SUCCEEDED, result.error
    assert result.metrics.validation_examples == 6


def test_transfer_from_an_unknown_or_unsuitable_base_is_refused(
    client: AgentTrainingClient,
) -> None:
    client.create_agent(agent_id="orphan")
    examples = banking_examples(NEW_INTENTS, per_intent=4)
    config = training_pb2.TrainingConfig(base_agent_id="no-such-agent")
    error = expect_error(
        client.train_agent,
        agent_id="orphan",
        training_data=examples,
        training_type=TRANSFER,
        config=config,
    )
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert error.code == "BASE_AGENT_NOT_FOUND" and "base_agent_id" in error.hint

    client.create_agent(agent_id="ngram-base")
    list(
        client.train_agent(
            agent_id="ngram-base",
            training_data=examples,
            config=training_pb2.TrainingConfig(epochs=2),
        )
    )
    config = training_pb2.TrainingConfig(base_agent_id="ngram-base")
    error = expect_error(
        client.train_agent,
        agent_id="orphan",
        training_data=examples,
        training_type=TRANSFER,
        config=config,
    )
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "BASE_ENCODER_NOT_TRANSFERABLE"
    assert client.list_training_jobs(agent_id="orphan").jobs == []


def test_a_transfer_versions_held_out_split_is_rebuilt_for_analysis(client) -> None:
    """AnalyzeAndOptimize without evaluation data measures the split the job held out."""
    client.create_agent(agent_id="analysed-transfer")
    result = finished(
        client, "analysed-transfer", banking_examples(NEW_INTENTS, per_intent=20), epochs=1
    )
    assert result.status == SUCCEEDED
    held_out = int(result.metrics.validation_examples)
    assert held_out == 6  # 10% of 20 per output, 3 outputs
    report = client.analyze_and_optimize(agent_id="analysed-transfer").analysis
    assert report.example_count == held_out
    # The job measured it in float32; answers may run in bfloat16: one example apart at most.
    assert abs(report.accuracy - result.metrics.validation_accuracy) <= 1 / held_out + 1e-9
