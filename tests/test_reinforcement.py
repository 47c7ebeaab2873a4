"""The reinforcement paradigm over a real channel: learning from logged feedback, no labels."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import INTENTS, banking_examples

REINFORCEMENT = training_pb2.TRAINING_TYPE_REINFORCEMENT


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[AgentTrainingClient]:
    server = ServerThread(make_config(tmp_path_factory.mktemp("reinforcement"), workers=1))
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made
    server.stop()


def test_learns_from_logged_interactions_starting_from_the_active_version(
    client: AgentTrainingClient,
) -> None:
    client.create_agent(agent_id="learner")
    examples = banking_examples(INTENTS, per_intent=40)
    seed = examples[::10]  # 4 labelled examples per intent make a weak logging policy
    start = list(
        client.train_agent(
            agent_id="learner", training_data=seed, config=training_pb2.TrainingConfig(epochs=20)
        )
    )
    parent = start[-1].finished.version_id

    queries = [e for i, e in enumerate(examples) if i % 10]
    answers = client.invoke_agent(agent_id="learner", inputs=[e.input for e in queries])
    log = [
        training_pb2.TrainingExample(
            input=query.input,
            expected_output=answer.output,
            propensity=answer.propensity,
            feedback="correct" if answer.output == query.expected_output else "incorrect",
        )
        for query, answer in zip(queries, answers.predictions, strict=True)
    ]
    assert {e.feedback for e in log} == {"correct", "incorrect"}

    events = list(
        client.train_agent(
            agent_id="learner", training_data=log, training_type=REINFORCEMENT, timeout=300
        )
    )
    finished = events[-1].finished
    assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED, finished.error
    assert -1.0 <= finished.metrics.policy_value <= 1.0
    values = [
        e.progress for e in events if e.HasField("progress") and e.progress.HasField("policy_value")
    ]
    assert values and all(v.HasField("loss") for v in values)

    version = client.list_agent_versions("learner").versions[0]
    assert version.training_type == REINFORCEMENT and version.parent_version_id == parent
    assert version.active and sorted(version.outputs) == sorted(INTENTS)


@pytest.mark.parametrize("feedback", ["", "meh", "2"])
def test_unreadable_feedback_is_refused_with_a_hint(
    client: AgentTrainingClient, feedback: str
) -> None:
    client.create_agent(agent_id=f"strict-{len(feedback)}{feedback[:1]}")
    log = [
        training_pb2.TrainingExample(
            input="where is my card", expected_output="card_arrival", feedback="correct"
        ),
        training_pb2.TrainingExample(
            input="rate for euros", expected_output="card_arrival", feedback=feedback
        ),
    ]
    error = expect_error(
        client.train_agent,
        agent_id=f"strict-{len(feedback)}{feedback[:1]}",
        training_data=log,
        training_type=REINFORCEMENT,
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in error.field_violations] == ["training_data[1].feedback"]
