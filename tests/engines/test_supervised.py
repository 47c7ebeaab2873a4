"""The supervised engine on its own: learning, determinism, cancellation, time limit, resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from agent_training_server.engines import registry
from agent_training_server.engines.base import (
    Example,
    Progress,
    TrainingCancelled,
    TrainingDataError,
    TrainingTimedOut,
    TrainSettings,
)
from agent_training_server.engines.checkpoint import FILE_NAME
from tests.conftest import BANKING77

INTENTS = (
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "top_up_failed",
    "cash_withdrawal_charge",
    "pin_blocked",
    "change_pin",
    "declined_card_payment",
    "Refund_not_showing_up",
    "transfer_timing",
)


def banking(per_intent: int = 25) -> list[Example]:
    counts: dict[str, int] = {}
    examples = []
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["category"] in INTENTS and counts.get(row["category"], 0) < per_intent:
                counts[row["category"]] = counts.get(row["category"], 0) + 1
                examples.append(Example(row["text"], row["category"]))
    return examples


class Recorder:
    """A reporter that records progress and can cancel after some reports."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.updates: list[Progress] = []
        self.cancel_after = cancel_after

    def progress(self, update: Progress) -> None:
        self.updates.append(update)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.updates) >= self.cancel_after


def train(tmp_path: Path, examples=None, reporter=None, **settings):
    engine = registry.get_engine("supervised")
    return engine.train(
        examples or banking(), TrainSettings(**settings), reporter or Recorder(), tmp_path
    )


def test_learns_and_predicts_its_training_examples(tmp_path: Path) -> None:
    examples = banking()
    reporter = Recorder()
    artifact = train(tmp_path, examples, reporter, epochs=20)
    predictor = registry.load_predictor(artifact.spec, artifact.tensors)
    best = predictor.predict_proba([e.input for e in examples]).argmax(axis=1)
    right = np.mean(
        [artifact.outputs[i] == e.expected_output for i, e in zip(best, examples, strict=True)]
    )
    assert right >= 0.95
    assert sorted(artifact.outputs) == sorted(INTENTS)
    assert artifact.metrics["train_examples"] + artifact.metrics["validation_examples"] == 250
    phases = [update.phase for update in reporter.updates]
    assert phases[0] == "loading_data" and "training" in phases and phases[-1] == "evaluating"
    epochs = [u.epoch for u in reporter.updates if u.phase == "training" and u.validation_loss]
    assert epochs == sorted(epochs) and epochs[-1] == artifact.metrics["epochs_run"]


def test_same_seed_same_metrics_and_tensors_other_seed_other_split(tmp_path: Path) -> None:
    first = train(tmp_path / "a", seed=3, epochs=5)
    second = train(tmp_path / "b", seed=3, epochs=5)
    other = train(tmp_path / "c", seed=4, epochs=5).metrics
    keys = ("accuracy", "loss", "validation_accuracy", "validation_loss", "macro_f1")
    assert [first.metrics[k] for k in keys] == [second.metrics[k] for k in keys]
    assert [first.metrics[k] for k in keys] != [other[k] for k in keys]
    assert first.tensors.keys() == second.tensors.keys()
    for name, tensor in first.tensors.items():
        assert torch.equal(tensor, second.tensors[name]), name


def test_cancel_stops_training(tmp_path: Path) -> None:
    with pytest.raises(TrainingCancelled):
        train(tmp_path, reporter=Recorder(cancel_after=2), epochs=50, batch_size=4)


def test_time_limit_stops_with_a_checkpoint_kept(tmp_path: Path) -> None:
    with pytest.raises(TrainingTimedOut, match="best validation loss so far"):
        train(
            tmp_path, epochs=1000, batch_size=1, early_stopping_patience=0, max_duration_seconds=0.5
        )
    assert (tmp_path / FILE_NAME).exists()


def test_resuming_from_a_checkpoint_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    uninterrupted = train(tmp_path / "whole", epochs=6, early_stopping_patience=0).metrics
    with pytest.raises(TrainingCancelled):
        # Cancel during epoch 4: the checkpoint of epoch 3 is on disk.
        reporter = Recorder()
        reporter.cancelled = lambda: (
            sum(  # type: ignore[method-assign]
                1 for u in reporter.updates if u.validation_loss is not None
            )
            >= 3
        )
        train(tmp_path / "split", reporter=reporter, epochs=6, early_stopping_patience=0)
    resumed = train(tmp_path / "split", epochs=6, early_stopping_patience=0).metrics
    for key in ("accuracy", "loss", "validation_accuracy", "validation_loss", "epochs_run"):
        assert resumed[key] == uninterrupted[key], key


def test_examples_marked_incorrect_are_not_taught(tmp_path: Path) -> None:
    examples = banking(per_intent=10)
    poisoned = [Example(e.input, "wrong_answer", "incorrect") for e in examples[:30]]
    artifact = train(tmp_path, examples + poisoned, epochs=5)
    assert "wrong_answer" not in artifact.outputs


def test_one_output_trains_an_agent_that_always_gives_it(tmp_path: Path) -> None:
    examples = [Example(f"hello there {i}", "greet") for i in range(10)]
    artifact = train(tmp_path / "one", examples)
    assert artifact.outputs == ["greet"] and artifact.metrics["accuracy"] == 1.0


def test_data_that_teaches_no_output_is_a_data_error(tmp_path: Path) -> None:
    examples = [Example(f"hello there {i}", "greet", "incorrect") for i in range(10)]
    with pytest.raises(TrainingDataError, match="at least 1"):
        train(tmp_path, examples)


def test_artifact_round_trips_through_files(tmp_path: Path) -> None:
    artifact = train(tmp_path / "train", epochs=3)
    registry.save_artifact(artifact, tmp_path / "artifact")
    spec, tensors, outputs = registry.load_artifact_files(tmp_path / "artifact")
    assert outputs == artifact.outputs
    texts = ["my card has not arrived", "what is the exchange rate"]
    before = registry.load_predictor(artifact.spec, artifact.tensors).predict_proba(texts)
    after = registry.load_predictor(spec, tensors).predict_proba(texts)
    np.testing.assert_array_equal(before, after)
    assert np.allclose(after.sum(axis=1), 1.0)


def test_unknown_training_type_is_reported() -> None:
    with pytest.raises(registry.UnknownEngine):
        registry.get_engine("telepathy")


def test_serving_scores_are_the_trained_models_to_float_rounding(tmp_path: Path) -> None:
    from agent_training_server.engines import text_features as tf
    from agent_training_server.engines.supervised import SparseLinear

    artifact = train(tmp_path, epochs=3)
    predictor = registry.load_predictor(artifact.spec, artifact.tensors)
    # A text with no known n-gram between two that have some: an empty row in the batch.
    texts = ["my card has not arrived", "\u4e00\u4e01\u4e02", "what is the exchange rate", "pin"]
    weight = artifact.tensors["weight"]
    model = SparseLinear(weight.shape[0], weight.shape[1])
    model.load_state_dict({"weight.weight": weight, "bias": artifact.tensors["bias"]})
    config = tf.FeatureConfig(**artifact.spec["features"])
    vocabulary = tf.Vocabulary(
        artifact.tensors["vocabulary"].numpy(), artifact.tensors["idf"].numpy()
    )
    rows = tf.transform(tf.raw_features(texts, config), vocabulary, len(texts))
    assert np.diff(rows.offsets)[1] == 0, "the second text was meant to have no known n-gram"
    with torch.no_grad():
        expected = torch.softmax(model(rows), dim=1).numpy()
    served = predictor.predict_proba(texts)
    np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-7)
    assert (served.argmax(axis=1) == expected.argmax(axis=1)).all()
    np.testing.assert_allclose(predictor.predict_proba(texts[1:2]), expected[1:2], rtol=1e-5)


def test_saved_scores_are_the_trained_ones_sharpened_by_the_temperature(tmp_path: Path) -> None:
    from agent_training_server.engines.supervised import SMOOTHED, SupervisedEngine, Targets

    assert 0 < SMOOTHED.label_smoothing < 1 and 0 < SMOOTHED.temperature < 1
    settings = TrainSettings(epochs=2)
    sharpened = SupervisedEngine().train(banking(), settings, Recorder(), tmp_path / "a").tensors
    as_trained = SupervisedEngine()
    as_trained.targets = Targets(SMOOTHED.label_smoothing, temperature=1.0)
    trained = as_trained.train(banking(), settings, Recorder(), tmp_path / "b").tensors
    for name in ("weight", "bias"):
        torch.testing.assert_close(sharpened[name], trained[name] / SMOOTHED.temperature)


def test_targets_are_smoothed_unless_the_data_holds_negatives() -> None:
    from agent_training_server.engines import negatives
    from agent_training_server.engines.supervised import PLAIN, SMOOTHED, targets_for

    assert targets_for(np.array([0, 1, 1, 2])) == SMOOTHED
    assert targets_for(np.array([0, negatives.NEGATIVE, 1])) == PLAIN
    assert PLAIN.label_smoothing == 0 and PLAIN.temperature == 1
