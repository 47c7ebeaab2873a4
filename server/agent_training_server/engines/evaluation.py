"""Splitting and scoring helpers shared by engines (pure numpy)."""

from __future__ import annotations

import numpy as np


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train rows, validation rows), holding out ``fraction`` of each output's examples.

    Outputs with fewer than two examples stay whole in training. When nothing can be held out
    (fraction 0 or too little data), the validation rows are the training rows: validation
    metrics then measure fit, not generalisation.
    """
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        rng.shuffle(rows)
        held = round(len(rows) * fraction) if len(rows) >= 2 else 0
        held = min(held, len(rows) - 1)
        valid.append(rows[:held])
        train.append(rows[held:])
    train_rows = np.sort(np.concatenate(train))
    valid_rows = np.sort(np.concatenate(valid))
    if len(valid_rows) == 0:
        return train_rows, train_rows
    return train_rows, valid_rows


def macro_f1(expected: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean F1 over the outputs present in ``expected`` or ``predicted``."""
    scores = []
    for label in np.union1d(np.unique(expected), np.unique(predicted)):
        if label >= classes:
            continue
        true_positive = np.sum((predicted == label) & (expected == label))
        predicted_count = np.sum(predicted == label)
        expected_count = np.sum(expected == label)
        if predicted_count + expected_count == 0:
            continue
        scores.append(2.0 * true_positive / (predicted_count + expected_count))
    return float(np.mean(scores)) if scores else 0.0
