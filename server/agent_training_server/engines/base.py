"""The engine interface: what every training paradigm implements.

Engines know nothing of gRPC, the store or the job system. They are fed examples, settings and a
progress reporter, and return an :class:`Artifact`. That keeps them runnable anywhere: a local
worker process today, a distributed executor later.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from agent_training_server.engines.parallel import SINGLE_PROCESS, DataParallel

if TYPE_CHECKING:
    import numpy as np
    import torch


class TrainingCancelled(Exception):
    """Raised by an engine when its reporter says the job was cancelled."""


class TrainingTimedOut(Exception):
    """Raised by an engine when the job ran past its maximum run time."""


class TrainingDataError(ValueError):
    """Raised by an engine when the examples cannot be trained on (for example one output only)."""

    error_code = "TRAINING_DATA_INVALID"


class EncoderUnavailable(TrainingDataError):
    """The pretrained encoder's package is not installed."""

    error_code = "ENCODER_UNAVAILABLE"


@dataclasses.dataclass(frozen=True)
class Example:
    """One training example, in the shape of the contract's ``TrainingExample``."""

    input: str
    expected_output: str
    feedback: str = ""
    """Empty, ``"correct"``, ``"incorrect"`` or a numeric reward in [-1, 1] as text."""
    context: tuple[str, ...] = ()
    """Earlier conversation turns, oldest first."""
    propensity: float | None = None
    """Reinforcement: probability with which the logging policy chose ``expected_output``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Resolved training settings: every field has its final value here."""

    epochs: int = 10
    """Maximum number of passes over the training split."""
    learning_rate: float = 0.02
    """Optimizer step size (supervised: Adagrad; the others: Adam or AdamW)."""
    batch_size: int = 0
    """Examples per optimizer step; 0 means automatic (about 40 steps per epoch, 16 to 256)."""
    seed: int = 0
    """Seed for the split, initialisation and data order: the same seed gives the same result."""
    validation_split: float = 0.1
    """Fraction of examples held out (stratified by output) to measure generalisation."""
    early_stopping_patience: int = 3
    """Epochs without improvement of validation loss before training stops; 0 disables."""
    early_stopping_min_delta: float = 1e-3
    """Smallest decrease of validation loss that counts as an improvement."""
    max_duration_seconds: float = 3600.0
    """Wall-clock budget; past it the engine stops and the job fails."""
    freeze_encoder_epochs: int = 0
    """Pretrained-encoder paradigms: epochs that train only the head before fine-tuning."""
    base_agent_id: str = ""
    """Transfer: the agent whose version to start from (resolved by the job system)."""
    base_version_id: str = ""
    """Transfer: that agent's version; empty means its active version."""
    num_workers: int = 1
    """Data-parallel processes training the job; more than 1 needs the Ray executor."""
    negative_output: str = ""
    """Examples with this expected output are negatives, not an output to learn
    (engines/negatives.py): the agent's fallback output, set by the job system. Empty: none."""
    keep_checkpoints: int = 1
    """Epoch checkpoints kept besides the best one: the last N (kept_checkpoints.py)."""
    device: str = ""
    """Where to train. As a job records it: what was asked (``auto``, ``cpu``, ``cuda:N``).
    As an engine receives it from a job: the concrete ``cpu`` or ``cuda:N`` the worker resolved
    (devices.resolve); empty (a work task's retraining) is the server's setting, resolved by
    the engine. Engines that run their model on it report it, and their precision, in the
    Artifact."""


def settings_of(config: dict[str, Any]) -> TrainSettings:
    """The training settings of a job's stored configuration.

    Its other keys, such as the rollout its version starts, are not the engine's.
    """
    known = {field.name for field in dataclasses.fields(TrainSettings)}
    return TrainSettings(**{name: value for name, value in config.items() if name in known})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Progress:
    """A progress report from inside an engine."""

    phase: str
    """One of ``loading_data``, ``loading_encoder`` (pretrained-encoder paradigms),
    ``training``, ``evaluating``, ``saving``."""
    epoch: int = 0
    total_epochs: int = 0
    step: int = 0
    """Optimizer steps done so far, over all epochs."""
    total_steps: int = 0
    """Optimizer steps planned over all epochs (an upper bound when early stopping may cut it)."""
    loss: float | None = None
    train_accuracy: float | None = None
    validation_accuracy: float | None = None
    validation_loss: float | None = None
    examples_per_second: float | None = None
    policy_value: float | None = None
    """Reinforcement: off-policy (SNIPS) estimate of the policy's expected reward."""


class Reporter(Protocol):
    """How an engine talks to whoever runs it."""

    def progress(self, update: Progress) -> None:
        """Receive a progress report; engines call it per epoch and every few steps."""

    def cancelled(self) -> bool:
        """Whether the job must stop now (cancelled, or its worker is shutting down).

        Engines check it before each step; when it is true they write a checkpoint of where they
        are and raise TrainingCancelled, so a job stopped by a shutdown resumes from that step.
        """


@dataclasses.dataclass
class Artifact:
    """What a finished training produces; the job system stores it as an agent version."""

    tensors: dict[str, torch.Tensor]
    """Model weights, saved with safetensors (never pickled)."""
    spec: dict[str, Any]
    """JSON-serialisable description sufficient to rebuild the predictor with the tensors."""
    outputs: list[str]
    """The output repertoire, in the order of the model's output units."""
    metrics: dict[str, float]
    """At least accuracy, loss, validation_accuracy, validation_loss, macro_f1, epochs_run,
    examples_per_second, duration_seconds, train_examples, validation_examples."""
    encoder: dict[str, Any]
    """Description of the text encoder (kind, dimensions, n-gram ranges...)."""
    device: str = "cpu"
    """Where the model trained (``cpu`` or ``cuda:N``); recorded in the version's manifest."""
    precision: str = "float32"
    """The arithmetic it trained in: ``float32``, or on a GPU ``bfloat16`` or ``float16``."""


class Engine(abc.ABC):
    """A training paradigm."""

    training_type: ClassVar[str]
    """The contract's training type this engine implements, e.g. ``"supervised"``."""
    cache_dir: Path | None = None
    """Folder shared by jobs for reusable intermediate results (e.g. pretrained embeddings)."""
    checkpoint_every_steps: int = 0
    """Also checkpoint inside an epoch every this many optimizer steps (0: at epoch ends only)."""
    parallel: DataParallel = SINGLE_PROCESS
    """This process's share of a data-parallel job (set by the executor; one process by default).

    Only engines that train data-parallel (supervised, few_shot and transfer) read it: validation
    refuses num_workers above 1 for the others.
    """
    starts_from_version: ClassVar[bool] = False
    """Whether ``train`` takes ``start_from``: the (spec, tensors) of the agent's active version."""

    @abc.abstractmethod
    def train(
        self,
        examples: Sequence[Example],
        settings: TrainSettings,
        reporter: Reporter,
        workdir: Path,
    ) -> Artifact:
        """Train on the examples and return the artifact.

        ``workdir`` is a private folder for checkpoints (one per epoch, safetensors); a
        checkpoint found there at the start is resumed from. Engines whose
        ``starts_from_version`` is true also take ``start_from``: the (spec, tensors) of the
        version to continue from.
        """


@dataclasses.dataclass(frozen=True)
class Scores:
    """What a predictor makes of a batch of texts: one row per text."""

    probabilities: np.ndarray
    """Shape (texts, outputs): each output's probability."""
    out_of_scope: np.ndarray
    """Shape (texts,): how unlike the training data each text is, in [0, 1]
    (engines/out_of_scope.py)."""

    def __getitem__(self, rows: slice) -> Scores:
        """The scores of some of the texts."""
        return Scores(self.probabilities[rows], self.out_of_scope[rows])

    def __len__(self) -> int:
        return len(self.probabilities)


class Predictor(abc.ABC):
    """A loaded model that scores inputs."""

    outputs: list[str]
    scores_inline: bool = False
    """Scores a few inputs faster than a hop to a worker thread and back: InvokeAgent then
    scores it on its event loop (services/micro_batching.py)."""

    @abc.abstractmethod
    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Build the model an artifact's spec describes, with its tensors."""

    @classmethod
    def load(
        cls, spec: dict[str, Any], tensors: dict[str, torch.Tensor], derived_dir: Path | None
    ) -> Predictor:
        """Build the predictor; it may cache files derived from the weights in ``derived_dir``.

        ``derived_dir`` is the version's artifact folder (None for weights not stored as a
        version): a predictor that converts its weights (an exported encoder) keeps the result
        there across restarts, keyed by the weights. The default derives nothing.
        """
        return cls(spec, tensors)

    @classmethod
    def check(cls, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Check, before building, that the tensors fit the model the spec describes.

        Cheap (shapes and finite values, no model built): it runs on every load of a version.
        The default checks nothing.

        Raises:
            integrity.DamagedFile: a tensor is missing, wrongly shaped or not finite.
        """
        return None

    @abc.abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), len(outputs)) of probabilities."""

    def score(self, texts: Sequence[str]) -> Scores:
        """The texts' probabilities and out-of-scope scores.

        The default: one minus the best probability (engines/out_of_scope.py).
        """
        probabilities = self.predict_proba(texts)
        return Scores(probabilities, 1.0 - probabilities.max(axis=1))
