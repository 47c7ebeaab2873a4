"""Every iterative engine, stopped mid-epoch and resumed, ends bit-identical to an unbroken run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from agent_training_server.engines import few_shot, registry
from agent_training_server.engines.base import Example, Progress, TrainingCancelled
from agent_training_server.engines.checkpoint import (
    DAMAGED_SUFFIX,
    checkpoint_files,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from agent_training_server.engines.defaults import defaults_for
from agent_training_server.engines.pretrained import SentenceEncoder as pretrained_encoder
from tests.engines.test_supervised import banking

TIMING = ("duration_seconds", "examples_per_second")


class StopAfterSteps:
    """A reporter that asks the engine to stop before its ``steps``-th optimizer step."""

    def __init__(self, steps: int | None = None) -> None:
        self.steps = steps
        self.asked = 0

    def progress(self, update: Progress) -> None:
        """Ignored."""

    def cancelled(self) -> bool:
        """Asked once per step: true from the chosen step on."""
        self.asked += 1
        return self.steps is not None and self.asked > self.steps


def interactions() -> list[Example]:
    """Logged interactions: the right intent rewarded, a wrong one penalised."""
    examples = banking(per_intent=12)
    outputs = sorted({e.expected_output for e in examples})
    logged = []
    for index, example in enumerate(examples):
        if index % 3:
            logged.append(dataclasses.replace(example, feedback="correct", propensity=0.6))
        else:
            wrong = outputs[(outputs.index(example.expected_output) + 1) % len(outputs)]
            logged.append(Example(example.input, wrong, "incorrect", propensity=0.3))
    return logged


CASES = {
    # training type: (examples, settings changes, steps before the stop)
    "supervised": (lambda: banking(), {"epochs": 4, "batch_size": 8}, 45),
    "reinforcement": (interactions, {"epochs": 4, "batch_size": 8}, 20),
    "few_shot": (lambda: banking(per_intent=2), {"epochs": 2, "batch_size": 8}, 4),
    "transfer": (lambda: banking(per_intent=3), {"epochs": 2, "batch_size": 8}, 5),
}


def run(training_type: str, workdir: Path, reporter: StopAfterSteps, every_steps: int):
    examples, changes, _ = CASES[training_type]
    engine = registry.get_engine(training_type)
    engine.checkpoint_every_steps = every_steps
    settings = dataclasses.replace(
        defaults_for(training_type), early_stopping_patience=0, **changes
    )
    return engine.train(examples(), settings, reporter, workdir)


@pytest.mark.parametrize("training_type", sorted(CASES))
def test_stopped_mid_epoch_and_resumed_matches_an_unbroken_run(
    training_type: str, tmp_path: Path
) -> None:
    torch.set_num_threads(1)  # one thread: the same sums in the same order, run after run
    whole = run(training_type, tmp_path / "whole", StopAfterSteps(), every_steps=0)
    stop_at = CASES[training_type][2]
    with pytest.raises(TrainingCancelled):
        run(training_type, tmp_path / "split", StopAfterSteps(stop_at), every_steps=5)
    state = load_checkpoint(tmp_path / "split")["state"]
    assert state["step_in_epoch"] > 0, state  # the stop fell inside an epoch
    resumed = run(training_type, tmp_path / "split", StopAfterSteps(), every_steps=5)
    for name, tensor in whole.tensors.items():
        assert torch.equal(tensor, resumed.tensors[name]), name
    # The weights after the last step too (the artifact holds the best epoch's, maybe earlier).
    last_whole = load_checkpoint(tmp_path / "whole")["model"]
    last_resumed = load_checkpoint(tmp_path / "split")["model"]
    for name, tensor in last_whole.items():
        assert torch.equal(tensor, last_resumed[name]), name
    expected = {k: v for k, v in whole.metrics.items() if k not in TIMING}
    assert {k: v for k, v in resumed.metrics.items() if k not in TIMING} == expected


def test_an_encoder_checkpoint_holds_what_training_changes_and_full_ones_still_resume(
    tmp_path: Path,
) -> None:
    """The frozen lower layers are rebuilt, not written each epoch; older files held them."""
    torch.set_num_threads(1)
    with pytest.raises(TrainingCancelled):
        run("few_shot", tmp_path / "split", StopAfterSteps(CASES["few_shot"][2]), every_steps=5)
    saved = load_checkpoint(tmp_path / "split")["model"]
    assert {"head.weight", "encoder.transformer.encoder.layer.5.output.dense.weight"} <= set(saved)
    assert not any(name.startswith("encoder.transformer.embeddings.") for name in saved)
    assert not any(".layer.0." in name for name in saved)
    whole = run("few_shot", tmp_path / "whole", StopAfterSteps(), every_steps=0)

    # A checkpoint as written before: every tensor of the model, the frozen ones too.
    folder = tmp_path / "split"
    checkpoint = read_checkpoint(checkpoint_files(folder)[0])
    # The frozen tensors as a job builds them: the pretrained encoder's.
    built = few_shot.CosineClassifier(pretrained_encoder(), 1).state_dict()
    full = {
        name: tensor
        for name, tensor in built.items()
        if name.startswith("encoder.") and name not in checkpoint["model"]
    }
    save_checkpoint(
        folder,
        {**full, **checkpoint["model"]},
        checkpoint["optimizer"],
        checkpoint["best"] or None,
        checkpoint["state"],
        checkpoint["rng"],
    )
    assert set(load_checkpoint(folder)["model"]) > set(saved)
    resumed = run("few_shot", folder, StopAfterSteps(), every_steps=5)
    for name, tensor in whole.tensors.items():
        assert torch.equal(tensor, resumed.tensors[name]), name


def rewrite_paused_supervised_checkpoints(folder: Path, rewrite) -> None:
    """Pause a supervised job in ``folder``; replace each checkpoint by ``rewrite(checkpoint)``."""
    torch.set_num_threads(1)
    with pytest.raises(TrainingCancelled):
        run("supervised", folder, StopAfterSteps(CASES["supervised"][2]), every_steps=5)
    for path in checkpoint_files(folder):
        checkpoint = rewrite(read_checkpoint(path))
        path.unlink()
        save_checkpoint(
            folder,
            checkpoint["model"],
            checkpoint["optimizer"],
            checkpoint["best"] or None,
            checkpoint["state"],
            checkpoint["rng"],
        )
    assert len(checkpoint_files(folder)) == 2


def assert_both_set_aside_and_started_again(folder: Path, tmp_path: Path) -> None:
    resumed = run("supervised", folder, StopAfterSteps(), every_steps=5)
    whole = run("supervised", tmp_path / "whole", StopAfterSteps(), every_steps=0)
    assert len(list(folder.glob(f"*{DAMAGED_SUFFIX}"))) == 2  # both set aside: from scratch
    for name, tensor in whole.tensors.items():
        assert torch.equal(tensor, resumed.tensors[name]), name


def test_a_checkpoint_of_another_optimizer_is_set_aside_and_the_job_starts_again(
    tmp_path: Path,
) -> None:
    """A supervised job paused while it trained with Adam, resumed by the Adagrad engine."""

    def as_if_adam(checkpoint: dict) -> dict:
        shapes = [
            state["sum"].shape for _, state in sorted(checkpoint["optimizer"]["state"].items())
        ]
        params = [torch.zeros(shape, requires_grad=True) for shape in shapes]
        adam = torch.optim.Adam(params, lr=0.02)
        for param in params:
            param.grad = torch.ones_like(param)
        adam.step()
        return {**checkpoint, "optimizer": adam.state_dict()}

    rewrite_paused_supervised_checkpoints(tmp_path / "split", as_if_adam)
    assert_both_set_aside_and_started_again(tmp_path / "split", tmp_path)


def test_a_checkpoint_of_another_objective_is_set_aside_and_the_job_starts_again(
    tmp_path: Path,
) -> None:
    """A supervised job paused while it trained on one-hot targets, resumed on smoothed ones."""

    def as_written_before(checkpoint: dict) -> dict:
        assert checkpoint["state"]["objective"] == "label_smoothing=0.3"
        # Before checkpoints named their objective, every one held the plain one.
        older = {k: v for k, v in checkpoint["state"].items() if k != "objective"}
        return {**checkpoint, "state": older}

    rewrite_paused_supervised_checkpoints(tmp_path / "split", as_written_before)
    assert_both_set_aside_and_started_again(tmp_path / "split", tmp_path)
