"""The out-of-scope score over a real channel: on every answer, recomputed independently from
the pretrained encoder, the fallback firing on it, and bad thresholds refused with a hint."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from agent_training.v1 import agents_pb2, synthetic_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples

INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed")
IN_SCOPE = [
    "my new card has still not come in the post",
    "someone took my card, please block it",
    "how much is a euro in pounds today",
    "the money I tried to add did not go through",
]
OFF_TOPIC = [
    "what's the weather like in Paris tomorrow?",
    "who won the football game last night?",
    "give me a recipe for banana bread",
    "how tall is the Eiffel tower?",
]


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[AgentTrainingClient]:
    server = ServerThread(make_config(tmp_path_factory.mktemp("out_of_scope"), workers=1))
    with AgentTrainingClient(server.address, timeout=300) as made:
        yield made
    server.stop()


def train(
    client: AgentTrainingClient, agent_id: str, training_type, negatives=(), **behavior
) -> None:
    client.create_agent(agent_id=agent_id, default_behavior=agents_pb2.BehaviorSettings(**behavior))
    events = list(
        client.train_agent(
            agent_id=agent_id,
            training_data=[*banking_examples(INTENTS, per_intent=5), *negatives],
            training_type=training_type,
            timeout=300,
        )
    )
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED


@pytest.fixture(scope="module")
def few_shot(client: AgentTrainingClient) -> list:
    """Answers of a few_shot agent without thresholds: the in-scope inputs, then the others."""
    train(client, "scoped", training_pb2.TRAINING_TYPE_FEW_SHOT)
    return list(client.invoke_agent(agent_id="scoped", inputs=IN_SCOPE + OFF_TOPIC).predictions)


def test_every_answer_carries_a_score_and_off_topic_ones_score_higher(few_shot) -> None:
    scores = [p.out_of_scope_score for p in few_shot]
    assert all(0 <= score <= 1 for score in scores), scores
    in_scope, off_topic = scores[: len(IN_SCOPE)], scores[len(IN_SCOPE) :]
    assert max(in_scope) < min(off_topic), (in_scope, off_topic)
    assert not any(p.is_fallback for p in few_shot)  # no threshold set: nothing falls back


def test_the_score_is_the_confidence_and_the_pretrained_distance(few_shot) -> None:
    """Recomputed from the answers' confidence and the pretrained encoder, as documented."""
    from agent_training_server.engines import pretrained

    encoder = pretrained.SentenceEncoder()
    known = encoder.embed([e.input for e in banking_examples(INTENTS, per_intent=5)]).numpy()
    asked = encoder.embed(IN_SCOPE + OFF_TOPIC).numpy()
    known /= np.linalg.norm(known, axis=1, keepdims=True)
    asked /= np.linalg.norm(asked, axis=1, keepdims=True)
    nearest = np.sort(asked @ known.T, axis=1)[:, -10:]
    distance = 1 - nearest.mean(axis=1)
    confidence = np.array([p.confidence for p in few_shot])
    expected = (1 - confidence + 2 * distance) / 3
    # Stored in float16 and served by ONNX Runtime: agreement to a few thousandths.
    assert [p.out_of_scope_score for p in few_shot] == pytest.approx(expected, abs=5e-3)


def test_the_fallback_fires_above_the_threshold(client, few_shot) -> None:
    scores = [p.out_of_scope_score for p in few_shot]
    threshold = (max(scores[: len(IN_SCOPE)]) + min(scores[len(IN_SCOPE) :])) / 2
    # The same data and seed train the same model: only the behaviour differs.
    train(client, "guarded", training_pb2.TRAINING_TYPE_FEW_SHOT, out_of_scope_threshold=threshold)
    answers = client.invoke_agent(agent_id="guarded", inputs=IN_SCOPE + OFF_TOPIC).predictions
    for answer, before in zip(answers, few_shot, strict=True):
        assert answer.out_of_scope_score == pytest.approx(before.out_of_scope_score, abs=1e-6)
    assert [a.is_fallback for a in answers] == [False] * len(IN_SCOPE) + [True] * len(OFF_TOPIC)
    assert {a.output for a in answers[len(IN_SCOPE) :]} == {"fallback"}
    assert [a.output for a in answers[: len(IN_SCOPE)]] == [b.output for b in few_shot[:4]]


def test_an_ngram_agent_scores_one_minus_its_confidence(client) -> None:
    train(client, "ngrams", training_pb2.TRAINING_TYPE_SUPERVISED)
    answers = client.invoke_agent(agent_id="ngrams", inputs=IN_SCOPE + OFF_TOPIC).predictions
    for answer in answers:  # the model's float32 probability against its float64 confidence
        assert answer.out_of_scope_score == pytest.approx(1 - answer.confidence, abs=1e-6)


@pytest.fixture(scope="module")
def generated_out_of_scope(client: AgentTrainingClient) -> list[str]:
    """Off-topic messages from the service's own out_of_scope generator."""
    messages = client.generate_synthetic_training_data(
        data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_OUT_OF_SCOPE, count=60
    )
    examples = [e.example for message in messages for e in message.examples]
    assert {e.expected_output for e in examples} == {"fallback"}  # the agents' fallback output
    return [e.input for e in examples]


@pytest.mark.parametrize(
    "training_type", [training_pb2.TRAINING_TYPE_SUPERVISED, training_pb2.TRAINING_TYPE_FEW_SHOT]
)
def test_negatives_are_trained_on_not_learned_as_an_output(
    client, generated_out_of_scope, training_type
) -> None:
    """Examples labelled with the fallback output lower the agent's confidence on messages like
    them (held out from the same generator), and are never an output it answers."""
    taught, held_out = generated_out_of_scope[:20], generated_out_of_scope[20:]
    name = training_pb2.TrainingType.Name(training_type).lower()
    negatives = [
        training_pb2.TrainingExample(input=text, expected_output="fallback") for text in taught
    ]
    train(client, f"without-{name}", training_type)
    train(client, f"with-{name}", training_type, negatives=negatives)
    version = client.list_agent_versions(f"with-{name}").versions[0]
    assert "fallback" not in version.outputs and len(version.outputs) == len(INTENTS)

    def answers(agent_id: str, texts: list[str]) -> list:
        return list(client.invoke_agent(agent_id=agent_id, inputs=texts).predictions)

    before, after = answers(f"without-{name}", held_out), answers(f"with-{name}", held_out)
    assert np.mean([a.confidence for a in after]) < np.mean([b.confidence for b in before])
    score = np.mean([a.out_of_scope_score for a in after])
    assert score > np.mean([b.out_of_scope_score for b in before])
    assert "fallback" not in {a.output for a in after}  # no threshold: an output, never it
    # The outputs' examples are still learned; accuracy is measured on them alone.
    assert version.metrics.accuracy >= 0.9, version.metrics


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_a_threshold_outside_zero_to_one_is_refused_with_a_hint(client, threshold) -> None:
    error = expect_error(
        client.create_agent,
        agent_id="bad-threshold",
        default_behavior=agents_pb2.BehaviorSettings(out_of_scope_threshold=threshold),
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    fields = {v.field: v.description for v in error.field_violations}
    assert "[0, 1]" in fields["default_behavior.out_of_scope_threshold"], fields
    assert error.hint and len(error.trace_id) == 32
