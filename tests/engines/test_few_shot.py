"""The few_shot engine on its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from agent_training_server.engines import checkpoint, registry
from agent_training_server.engines.base import Example, TrainingDataError
from agent_training_server.engines.defaults import defaults_for
from tests.engines.test_supervised import Recorder, banking


def test_more_than_twenty_examples_per_output_is_refused(tmp_path: Path) -> None:
    examples = [Example(f"where is my card {i}", "card_arrival") for i in range(21)]
    examples += [Example("what is the rate", "exchange_rate")]
    with pytest.raises(TrainingDataError, match="1 to 20 examples per output"):
        registry.get_engine("few_shot").train(
            examples, defaults_for("few_shot"), Recorder(), tmp_path
        )


def test_trains_reports_and_round_trips(tmp_path: Path) -> None:
    examples = banking(per_intent=3)
    reporter = Recorder()
    artifact = registry.get_engine("few_shot").train(
        examples, defaults_for("few_shot"), reporter, tmp_path / "work"
    )
    assert artifact.metrics["accuracy"] >= 0.9
    assert {u.phase for u in reporter.updates} >= {"loading_data", "training", "evaluating"}
    registry.save_artifact(artifact, tmp_path / "artifact")
    spec, tensors, outputs = registry.load_artifact_files(tmp_path / "artifact")
    texts = ["my card still has not come", "how much is a euro in pounds"]
    before = registry.load_predictor(artifact.spec, artifact.tensors).predict_proba(texts)
    after = registry.load_predictor(spec, tensors).predict_proba(texts)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)
    assert outputs[int(after[0].argmax())] == "card_arrival"


def test_without_a_held_out_split_epochs_report_training_figures_and_the_last_is_kept(
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(defaults_for("few_shot"), epochs=2, validation_split=0.0)
    reporter = Recorder()
    artifact = registry.get_engine("few_shot").train(
        banking(per_intent=3), settings, reporter, tmp_path / "work"
    )
    ends = [u for u in reporter.updates if u.phase == "training" and u.train_accuracy is not None]
    assert [u.epoch for u in ends] == [1, 2]
    assert all(u.validation_accuracy is None and u.loss is not None for u in ends)
    assert 0.0 <= ends[-1].train_accuracy <= 1.0
    # Nothing held out to choose by: the version is the last epoch's weights.
    saved = checkpoint.read_checkpoint(tmp_path / "work" / checkpoint.FILE_NAME)
    assert saved["state"]["best_epoch"] == 2 and saved["best"] == {}
    assert artifact.metrics["epochs_run"] == 2
