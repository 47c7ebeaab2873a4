"""Negatives: training examples of what an agent must not answer.

An example whose expected output is the agent's fallback output (``TrainSettings.negative_output``,
set by the job system) is not an output to learn: it is a message the agent should be unsure of.
The labelled engines (supervised, few_shot, transfer) train on negatives with *outlier exposure*
(Hendrycks et al., 2019): besides the usual cross-entropy on the examples of the outputs, the
cross-entropy of the negatives' predicted distribution to the uniform one, so that the model's
confidence on such messages falls and their out-of-scope score (out_of_scope.py) rises.

Negatives are all kept for training: the held-out split and every accuracy figure are those of the
outputs' examples, exactly as without negatives.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from agent_training_server.engines.evaluation import stratified_split

NEGATIVE = -1
"""The label of a negative example."""

WEIGHT = 0.5
"""Weight of the negatives' term against the outputs' cross-entropy (the paper's 0.5)."""


def labels_of(expected: list[str], outputs: list[str], negative_output: str) -> np.ndarray:
    """Each example's output index, NEGATIVE for a negative."""
    index = {output: position for position, output in enumerate(outputs)}
    return np.array(
        [NEGATIVE if (negative_output and e == negative_output) else index[e] for e in expected],
        dtype=np.int64,
    )


def split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), negatives held out at the same fraction.

    The outputs' examples are split as without negatives: the same seed holds out the same ones.
    Held-out negatives let the validation split measure out-of-scope detection (analysis,
    AdaptAgentBehavior's oos_recall target); scores of outputs skip them (``positive``). Where
    nothing is held out the validation rows are the training rows (the same object), as
    stratified_split returns them.
    """
    negative = np.flatnonzero(labels == NEGATIVE)
    if len(negative) == 0:
        return stratified_split(labels, fraction, seed)
    positive = np.flatnonzero(labels != NEGATIVE)
    train, valid = stratified_split(labels[positive], fraction, seed)
    if valid is train:  # nothing held out: everything trains, and "validates"
        every = np.arange(len(labels))
        return every, every
    negative_train, negative_valid = stratified_split(labels[negative], fraction, seed + 1)
    if negative_valid is negative_train:  # a single negative: it trains
        negative_valid = negative_valid[:0]
    train_rows = np.sort(np.concatenate([positive[train], negative[negative_train]]))
    valid_rows = np.sort(np.concatenate([positive[valid], negative[negative_valid]]))
    return train_rows, valid_rows


def positive(labels: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Which labels are an output's (not a negative's)."""
    return labels != NEGATIVE


def loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The training loss of a batch, averaged over its examples.

    Cross-entropy on the outputs' examples plus WEIGHT times the negatives' cross-entropy to the
    uniform distribution; a batch without negatives gives plain cross-entropy. With
    ``label_smoothing`` e an output's example aims at (1 - e) on its output and e spread evenly
    over all (torch's ``cross_entropy(label_smoothing=e)``).
    """
    negative = targets == NEGATIVE
    if not bool(negative.any()):
        return nn.functional.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    log_probabilities = nn.functional.log_softmax(logits, dim=1)
    positive = ~negative
    outputs_term = (
        nn.functional.cross_entropy(
            logits[positive], targets[positive], reduction="sum", label_smoothing=label_smoothing
        )
        if bool(positive.any())
        else logits.new_zeros(())
    )
    uniform_term = -log_probabilities[negative].mean(dim=1).sum()
    return (outputs_term + WEIGHT * uniform_term) / len(targets)
