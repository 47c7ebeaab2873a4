"""maximize_accuracy: a short hyperparameter search for supervised versions.

Retrains the version's engine on the version's own training data with a few settings around the
ones it was trained with (epochs x1, x2 and x4; learning rate x1 and x2), picks the one with the
lowest loss on the validation split held out of that data (never by the evaluation set, which
then measures the pick without bias; loss, because accuracy on a small split ties too often),
and reports the pick's accuracy on the evaluation set. Training is
deterministic for a seed, so applying the suggestion retrains exactly the measured model.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent_training_server.cancellation import call_cancelled
from agent_training_server.engines import registry
from agent_training_server.engines.base import Artifact, Example, Progress, TrainSettings


@dataclasses.dataclass(frozen=True)
class Trial:
    """One retraining and what it measured."""

    epochs: int
    learning_rate: float
    validation_accuracy: float
    validation_loss: float
    evaluation_accuracy: float


class QuietReporter:
    """A reporter that ignores progress and cancels when the RPC it trains for has ended."""

    def progress(self, update: Progress) -> None:
        """Ignore progress."""

    def cancelled(self) -> bool:
        """Whether the calling RPC was cancelled or ran past its deadline."""
        return call_cancelled()


def candidates(settings: TrainSettings) -> list[tuple[int, float]]:
    """(epochs, learning rate) pairs tried around `settings`, the current one excluded."""
    pairs = [
        (epochs, rate)
        for epochs in (settings.epochs, settings.epochs * 2, settings.epochs * 4)
        for rate in (settings.learning_rate, settings.learning_rate * 2)
    ]
    return [pair for pair in pairs if pair != (settings.epochs, settings.learning_rate)]


def train(
    training_type: str,
    examples: Sequence[Example],
    settings: TrainSettings,
    start_from: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Artifact:
    """Train once, in this process, in a throw-away folder (from `start_from` weights if any)."""
    extra = {"start_from": start_from} if start_from is not None else {}
    with tempfile.TemporaryDirectory() as workdir:
        return registry.get_engine(training_type).train(
            examples, settings, QuietReporter(), Path(workdir), **extra
        )


def run(
    training_type: str,
    examples: Sequence[Example],
    settings: TrainSettings,
    inputs: Sequence[str],
    expected: Sequence[str],
) -> list[Trial]:
    """Retrain with every candidate setting; measure each on validation and evaluation data."""
    trials = []
    for epochs, rate in candidates(settings):
        tried = dataclasses.replace(settings, epochs=epochs, learning_rate=rate)
        artifact = train(training_type, examples, tried)
        predictor = registry.load_predictor(
            {**artifact.spec, "outputs": artifact.outputs}, artifact.tensors
        )
        best = predictor.predict_proba(list(inputs)).argmax(axis=1)
        right = [predictor.outputs[b] == e for b, e in zip(best, expected, strict=True)]
        metrics = artifact.metrics
        trials.append(
            Trial(
                epochs,
                rate,
                metrics["validation_accuracy"],
                metrics["validation_loss"],
                float(np.mean(right)),
            )
        )
    return trials
