"""RecordFeedback over a real channel: ownership, idempotency, validation, durability."""

from __future__ import annotations

import grpc
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples


def train(client: AgentTrainingClient, agent_id: str) -> None:
    client.create_agent(agent_id=agent_id)
    events = list(client.train_agent(agent_id=agent_id, training_data=banking_examples()))
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED


def test_feedback_is_idempotent_per_answer_owned_and_survives_a_restart(tmp_path):
    config = make_config(tmp_path, workers=1)
    running = ServerThread(config)
    try:
        with AgentTrainingClient(running.address, timeout=60) as client:
            train(client, "answerer")
            train(client, "other")
            answers = client.invoke_agent(
                agent_id="answerer", inputs=["where is my new card", "how do I top up"]
            ).predictions
            first = client.record_feedback(
                agent_id="answerer",
                invocation_id=answers[0].invocation_id,
                feedback="incorrect",
                corrected_output="card_arrival",
                comment="it was about delivery",
            )
            assert first.feedback_id and not first.duplicate
            again = client.record_feedback(
                agent_id="answerer", invocation_id=answers[0].invocation_id, feedback="correct"
            )
            assert again.duplicate and again.feedback_id == first.feedback_id
            error = expect_error(
                client.record_feedback,
                agent_id="other",
                invocation_id=answers[1].invocation_id,
                feedback="correct",
            )
            assert_status(error, grpc.StatusCode.PERMISSION_DENIED)
            assert error.code == "INVOCATION_OF_ANOTHER_AGENT"
            error = expect_error(
                client.record_feedback,
                agent_id="answerer",
                invocation_id="inv_0000000000000000",
                feedback="correct",
            )
            assert_status(error, grpc.StatusCode.NOT_FOUND)
            assert error.code == "INVOCATION_NOT_FOUND" and error.hint
    finally:
        running.stop()
    # Answers and feedback are on disk: a new server knows them.
    restarted = ServerThread(config)
    try:
        with AgentTrainingClient(restarted.address, timeout=60) as client:
            later = client.record_feedback(
                agent_id="answerer", invocation_id=answers[1].invocation_id, feedback="0.5"
            )
            assert not later.duplicate
            replay = client.record_feedback(
                agent_id="answerer", invocation_id=answers[0].invocation_id, feedback="correct"
            )
            assert replay.duplicate and replay.feedback_id == first.feedback_id
            from tests.test_service import _cli

            answer = client.invoke_agent(agent_id="answerer", input="my card is lost")
            shown = _cli(
                restarted.address, "feedback", "answerer",
                answer.predictions[0].invocation_id, "correct",
            )  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert '"feedback_id"' in shown.stdout
    finally:
        restarted.stop()


@pytest.mark.parametrize("feedback", ["", "maybe", "2", "-1.5", "nan"])
def test_malformed_feedback_is_refused_with_a_hint(tmp_path, feedback):
    running = ServerThread(make_config(tmp_path, workers=1))
    try:
        with AgentTrainingClient(running.address, timeout=60) as client:
            client.create_agent(agent_id="someone")
            error = expect_error(
                client.record_feedback,
                agent_id="someone",
                invocation_id="inv_0000000000000000",
                feedback=feedback,
            )
            assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
            assert "feedback" in error.message and error.hint
    finally:
        running.stop()


def test_answers_of_an_agent_deleted_before_they_are_written_do_not_block_others(tmp_path):
    running = ServerThread(make_config(tmp_path, workers=1))
    try:
        with AgentTrainingClient(running.address, timeout=60) as client:
            train(client, "doomed")
            train(client, "survivor")
            client.invoke_agent(agent_id="doomed", input="where is my new card")
            kept = client.invoke_agent(agent_id="survivor", input="where is my new card")
            client.delete_agent("doomed")  # before the answers are written behind
            later = client.invoke_agent(agent_id="survivor", input="how do I top up")
            for answer in (kept.predictions[0], later.predictions[0]):
                recorded = client.record_feedback(
                    agent_id="survivor", invocation_id=answer.invocation_id, feedback="correct"
                )
                assert recorded.feedback_id
    finally:
        running.stop()
