"""Fast paths of generation: chunk bytes written directly, candidates made a batch at a time."""

from __future__ import annotations

import pytest

from agent_training.v1 import service_pb2, synthetic_pb2, training_pb2
from agent_training_server.api.synthetic_wire import ChunkEncoder, varint
from agent_training_server.synthetic import textops
from agent_training_server.synthetic.plan import GenerationPlan, make_source
from agent_training_server.synthetic.sources import Sample, SourceExample

SAMPLES = [
    Sample("where is my parcel", "track_package", "shipping", "track_package"),
    Sample("où est mon colis ? ünïcödé", "track_package", "shipping", "track_package"),
    Sample("x" * 20_000, "long", "custom", "long_input"),
    Sample("and my card?", "card_lost", "cards", "card_lost", ("hi", "", "lost it"), "correct"),
    Sample("refund please", "refund", "", "", (), "incorrect", 0.0),
    Sample("refund now", "escalate", "refunds", "request_refund", (), "", 0.002597),
    Sample("", "", "", ""),
]


def sample_to_proto(
    sample: Sample, difficulty: int, generator: str
) -> synthetic_pb2.SyntheticExample:
    """One generated example built with the message classes: what the wire encoder must match."""
    example = training_pb2.TrainingExample(
        input=sample.input,
        expected_output=sample.label,
        feedback=sample.feedback,
        context=sample.context,
    )
    if sample.propensity is not None:
        example.propensity = sample.propensity
    return synthetic_pb2.SyntheticExample(
        example=example,
        topic=sample.topic,
        intent=sample.intent,
        difficulty=difficulty,
        generator=generator,
    )


def as_messages(samples: list[Sample], difficulty: int, generator: str) -> bytes:
    message = service_pb2.GenerateSyntheticTrainingDataResponse(
        examples=[sample_to_proto(s, difficulty, generator) for s in samples],
        generated_count=7,
        total_count=9,
    )
    return message.SerializeToString(deterministic=True)


@pytest.mark.parametrize("difficulty", [0, synthetic_pb2.DIFFICULTY_HARD])
@pytest.mark.parametrize("generator", ["customer_queries", ""])
def test_chunk_bytes_are_those_of_the_message_classes(difficulty: int, generator: str) -> None:
    encoder = ChunkEncoder(difficulty, generator)
    for _ in range(2):  # the second time from the encoder's cache
        made = encoder.response(SAMPLES, 7, 9).SerializeToString(deterministic=True)
        assert made == as_messages(SAMPLES, difficulty, generator)


def test_varints_of_every_size() -> None:
    assert varint(0) == b"\x00"
    for value in (1, 127, 128, 16_383, 16_384, 2**21, 2**30 + 5):
        field = synthetic_pb2.GenerationSummary(candidates_tried=value).SerializeToString()
        assert field[1:] == varint(value)


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
@pytest.mark.parametrize("data_type", ["customer_queries", "conversations", "paraphrases"])
def test_a_batch_of_candidates_equals_as_many_single_ones(data_type: str, difficulty: str) -> None:
    sources = tuple(
        SourceExample(text, label)
        for text, label in [("how do i top up my card", "top_up"), ("my card is lost", "lost")]
    )
    plan = GenerationPlan(
        data_type=data_type, count=100, difficulty=difficulty, seed=5, source_examples=sources
    )
    one_by_one, batched = make_source(plan), make_source(plan)
    for unit in (0, 1, 0):
        singles = [one_by_one.candidate(unit) for _ in range(40)]
        assert batched.candidates(unit, 40) == singles


def test_styled_queries_reword_and_swap_synonyms() -> None:
    import random

    rng = random.Random(0)
    texts = {
        textops.vary_query("how do i top up my card", rng.random, 0.5, 0.5) for _ in range(200)
    }
    assert "how do i top up my card" in texts
    assert any(text.startswith("how can i") for text in texts)  # a rewording
    assert any("recharge" in text or "add money to" in text for text in texts)  # a synonym
