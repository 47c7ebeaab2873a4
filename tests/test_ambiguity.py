"""The ambiguity margin over a real channel: answers whose best two outputs are close are marked
and carry both; the fallback keeps the truly unsure; bad margins are refused with a hint."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import agents_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_analysis import trained

MARGIN = 0.3
# Clear requests of the trained intents, and vague ones that sit between them.
INPUTS = [
    "my card still has not arrived",
    "what is the exchange rate for euros",
    "my top up failed",
    "card",
    "money",
    "I was charged for taking cash out and my card is late",
    "rate of my top up",
    "hello",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("ambiguity"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made


def pairs(alternatives) -> list[tuple[str, float]]:
    return [(a.output, a.confidence) for a in alternatives]


def test_answers_within_the_margin_are_marked_and_carry_the_best_two(client) -> None:
    trained(client, "margin", ambiguity_margin=MARGIN, num_alternatives=3)
    assert client.get_agent("margin").default_behavior.ambiguity_margin == MARGIN
    predictions = client.invoke_agent(agent_id="margin", inputs=INPUTS).predictions
    marked = 0
    for prediction in predictions:
        runner_up = prediction.alternatives[0]
        close = prediction.confidence - runner_up.confidence <= MARGIN
        assert prediction.is_ambiguous == close, prediction
        if close:
            marked += 1
            assert pairs(prediction.ambiguous_outputs) == [
                (prediction.output, prediction.confidence),
                (runner_up.output, runner_up.confidence),
            ]
        else:
            assert not prediction.ambiguous_outputs
        assert not prediction.is_fallback  # no threshold: the best output is the answer
    assert 0 < marked < len(INPUTS), [(p.confidence, p.alternatives[0]) for p in predictions]


def test_the_pair_comes_without_alternatives_and_never_on_a_fallback(client) -> None:
    trained(client, "unsure", ambiguity_margin=1.0, num_alternatives=0, confidence_threshold=0.9)
    predictions = client.invoke_agent(agent_id="unsure", inputs=INPUTS).predictions
    fallbacks = [p for p in predictions if p.is_fallback]
    answered = [p for p in predictions if not p.is_fallback]
    assert fallbacks and answered, [p.confidence for p in predictions]
    for prediction in fallbacks:  # the fallback output stays for the truly unsure
        assert prediction.output == "fallback" and not prediction.is_ambiguous
        assert not prediction.ambiguous_outputs
    for prediction in answered:  # a margin of 1 marks every answer, and carries both outputs
        assert prediction.is_ambiguous and not prediction.alternatives
        best, second = pairs(prediction.ambiguous_outputs)
        assert best == (prediction.output, prediction.confidence)
        assert second[0] != best[0] and 0 < second[1] <= best[1]


def test_no_margin_marks_nothing(client) -> None:
    trained(client, "plain")
    predictions = client.invoke_agent(agent_id="plain", inputs=INPUTS).predictions
    assert not any(p.is_ambiguous or p.ambiguous_outputs for p in predictions)


@pytest.mark.parametrize("margin", [-0.1, 1.5, float("nan")])
def test_a_margin_outside_zero_to_one_is_refused_with_a_hint(client, margin: float) -> None:
    error = expect_error(
        client.create_agent,
        agent_id="bad-margin",
        default_behavior=agents_pb2.BehaviorSettings(ambiguity_margin=margin),
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    fields = {v.field: v.description for v in error.field_violations}
    assert "default_behavior.ambiguity_margin" in fields, error.field_violations
    assert "[0, 1]" in fields["default_behavior.ambiguity_margin"]
    assert error.hint and len(error.trace_id) == 32
