"""The few_shot paradigm over a real channel, on a handful of examples per output."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import torch

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples

FEW_SHOT = training_pb2.TRAINING_TYPE_FEW_SHOT
INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed")


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[AgentTrainingClient]:
    server = ServerThread(make_config(tmp_path_factory.mktemp("few_shot"), workers=1))
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made
    server.stop()


def test_few_shot_learns_from_five_examples_each(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="tiny")
    examples = banking_examples(INTENTS, per_intent=5)
    events = list(
        client.train_agent(
            agent_id="tiny", training_data=examples, training_type=FEW_SHOT, timeout=300
        )
    )
    finished = events[-1].finished
    assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED, finished.error
    assert finished.metrics.accuracy >= 0.9 and finished.metrics.epochs_run == 3

    version = client.list_agent_versions("tiny").versions[0]
    assert version.training_type == FEW_SHOT
    assert version.encoder.name == "all-MiniLM-L6-v2" and version.encoder.dimensions == 384
    assert version.manifest.config.epochs == 3 and version.manifest.config.learning_rate == 2e-4

    # Worded unlike any of its examples:
    answer = client.invoke_agent(
        agent_id="tiny", input="what's the conversion rate from euros to dollars?"
    )
    assert answer.predictions[0].output == "exchange_rate"


def test_few_shot_refuses_large_sets_with_a_hint(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="crowded")
    examples = banking_examples(("card_arrival", "exchange_rate"), per_intent=25)
    error = expect_error(
        client.train_agent, agent_id="crowded", training_data=examples, training_type=FEW_SHOT
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "1 to 20 examples per output" in error.field_violations[0].description
    assert "SUPERVISED" in error.field_violations[0].description


def test_adding_a_new_output_extends_the_agent_without_retraining(
    client: AgentTrainingClient,
) -> None:
    client.create_agent(agent_id="growing")
    old = banking_examples(INTENTS, per_intent=5)
    list(
        client.train_agent(
            agent_id="growing", training_data=old, training_type=FEW_SHOT, timeout=300
        )
    )
    new = banking_examples(("pin_blocked",), per_intent=5)
    events = list(
        client.train_agent(
            agent_id="growing", training_data=new, training_type=FEW_SHOT, timeout=300
        )
    )
    finished = events[-1].finished
    assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED, finished.error
    assert finished.metrics.epochs_run == 0  # no step: the old outputs are untouched

    version = client.list_agent_versions("growing").versions[0]
    assert sorted(version.outputs) == sorted((*INTENTS, "pin_blocked"))
    answers = client.invoke_agent(agent_id="growing", inputs=[e.input for e in old + new])
    right = sum(
        a.output == e.expected_output for a, e in zip(answers.predictions, old + new, strict=True)
    )
    assert right / len(answers.predictions) >= 0.9


def test_one_output_on_a_fresh_agent_is_refused(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="single")
    error = expect_error(
        client.train_agent,
        agent_id="single",
        training_type=FEW_SHOT,
        training_data=banking_examples(("pin_blocked",), per_intent=5),
    )
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "extend" in error.field_violations[0].description


def test_pretrained_embeddings_are_cached_by_content(tmp_path) -> None:
    from agent_training_server.engines import pretrained

    encoder = pretrained.SentenceEncoder()
    texts = ["where is my card", "what is the exchange rate"]
    first = pretrained.cached_embeddings(texts, tmp_path, lambda: encoder.embed(texts))
    files = list(tmp_path.glob("embeddings-*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = pretrained.cached_embeddings(texts, tmp_path, lambda: encoder.embed(texts))
    assert files[0].stat().st_mtime_ns == stamp  # read back, not recomputed
    assert torch.allclose(first, again)
    more = [*texts, "hello"]
    other = pretrained.cached_embeddings(more, tmp_path, lambda: encoder.embed(more))
    assert other.shape == (3, 384) and len(list(tmp_path.glob("embeddings-*.npy"))) == 2


def test_batched_embeddings_keep_the_order_of_the_texts() -> None:
    from agent_training_server.engines import pretrained

    encoder = pretrained.SentenceEncoder()
    # Lengths out of order, so batching by length has to put the rows back.
    texts = [
        "I was charged twice for the same card payment last week, can you help me sort it out?",
        "top up",
        "what is the exchange rate for euros",
        "card",
    ]
    together = encoder.embed(texts, batch_size=2)
    alone = torch.cat([encoder.embed([text]) for text in texts])
    assert together.shape == (4, 384)
    assert torch.allclose(together, alone, atol=1e-5)
    assert encoder.embed([]).shape == (0, 384)
