"""Negatives in training: labels, the split and the loss, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent_training_server.engines import negatives
from agent_training_server.engines.evaluation import stratified_split


def test_the_fallback_output_is_labelled_negative_and_nothing_else() -> None:
    labels = negatives.labels_of(["b", "fallback", "a"], ["a", "b"], "fallback")
    assert labels.tolist() == [1, negatives.NEGATIVE, 0]
    with pytest.raises(KeyError):  # without a negative output it is an unknown output
        negatives.labels_of(["fallback"], ["a", "b"], "")


def test_the_split_holds_out_what_it_would_without_negatives_and_a_share_of_negatives() -> None:
    outputs = np.repeat(np.arange(4), 10)
    labels = np.concatenate([outputs, np.full(10, negatives.NEGATIVE)])
    order = np.random.default_rng(0).permutation(len(labels))  # negatives among the examples
    mixed = labels[order]
    train, valid = negatives.split(mixed, 0.2, seed=3)
    alone_train, alone_valid = stratified_split(mixed[mixed >= 0], 0.2, seed=3)
    positive = np.flatnonzero(mixed >= 0)
    assert set(positive[alone_valid]) == set(valid[mixed[valid] >= 0].tolist())
    assert set(positive[alone_train]) == set(train[mixed[train] >= 0].tolist())
    assert (mixed[valid] < 0).sum() == 2 and (mixed[train] < 0).sum() == 8
    assert sorted([*train, *valid]) == list(range(len(mixed)))


def test_a_single_negative_trains() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1, negatives.NEGATIVE])
    train, valid = negatives.split(labels, 0.34, 0)
    assert 6 in train.tolist() and 6 not in valid.tolist()


def test_without_negatives_the_split_is_stratified_split_itself() -> None:
    labels = np.repeat(np.arange(3), 5)
    assert [r.tolist() for r in negatives.split(labels, 0.2, 1)] == [
        r.tolist() for r in stratified_split(labels, 0.2, 1)
    ]
    train, valid = negatives.split(labels, 0.0, 1)
    assert train is valid  # nothing held out: the same rows, as engines expect


def test_nothing_held_out_with_negatives_keeps_the_same_rows() -> None:
    labels = np.array([0, 1, negatives.NEGATIVE, 1, 0])
    train, valid = negatives.split(labels, 0.0, 0)
    assert train is valid and train.tolist() == [0, 1, 2, 3, 4]


def test_the_loss_adds_half_the_negatives_cross_entropy_to_uniform() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, -2.0, 0.0]])
    targets = torch.tensor([0, negatives.NEGATIVE, 2])
    log_p = torch.log_softmax(logits, dim=1)
    expected = (-log_p[0, 0] - log_p[2, 2] + 0.5 * -log_p[1].mean()) / 3
    assert negatives.loss(logits, targets).item() == pytest.approx(expected.item())


def test_the_loss_without_negatives_is_cross_entropy_and_with_only_negatives_is_finite() -> None:
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 1, 2, 3, 0])
    assert torch.equal(
        negatives.loss(logits, targets), torch.nn.functional.cross_entropy(logits, targets)
    )
    only = negatives.loss(logits, torch.full((5,), negatives.NEGATIVE))
    assert torch.isfinite(only) and only.item() == pytest.approx(
        0.5 * -torch.log_softmax(logits, 1).mean().item()
    )


def test_label_smoothing_moves_part_of_each_outputs_target_to_uniform() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, -2.0, 0.0]])
    log_p = torch.log_softmax(logits, dim=1)
    smoothed = [
        0.7 * -log_p[row, label] + 0.3 * -log_p[row].mean() for row, label in ((0, 0), (2, 2))
    ]
    with_negative = torch.tensor([0, negatives.NEGATIVE, 2])
    expected = (smoothed[0] + smoothed[1] + 0.5 * -log_p[1].mean()) / 3
    assert negatives.loss(logits, with_negative, 0.3).item() == pytest.approx(expected.item())
    outputs_only = torch.tensor([0, 2, 2])
    assert negatives.loss(logits, outputs_only, 0.3).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, outputs_only, label_smoothing=0.3).item()
    )


def test_uniform_predictions_minimise_the_negatives_term() -> None:
    uniform = torch.zeros(1, 4, requires_grad=True)
    negatives.loss(uniform, torch.tensor([negatives.NEGATIVE])).backward()
    assert uniform.grad is not None and torch.allclose(uniform.grad, torch.zeros(1, 4), atol=1e-7)
