"""Evaluation of an agent version's answers: accuracy, F1, calibration, coverage, out of scope.

Pure numpy over the model's probabilities, so every figure can be recomputed independently from
the answers InvokeAgent gives (the tests do).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np

RELIABILITY_BINS = 10
CONFUSED_PAIRS = 10
EXAMPLES_PER_PAIR = 3


@dataclasses.dataclass(frozen=True)
class OutputScore:
    """Precision, recall and F1 of one output."""

    output: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclasses.dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of a reliability table."""

    lower: float
    upper: float
    count: int
    accuracy: float
    mean_confidence: float


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured."""

    example_count: int
    accuracy: float
    macro_f1: float
    weighted_f1: float
    per_output: list[OutputScore]
    confused_pairs: list[tuple[str, str, int, list[str]]]
    expected_calibration_error: float
    reliability: list[ReliabilityBin]
    log_loss: float
    confidence_threshold: float
    coverage: float
    accuracy_when_answered: float
    unseen_outputs: list[str]


def tempered(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities with the logits divided by `temperature` (as the behaviour applies it)."""
    if temperature == 1.0:
        return probabilities
    scores = np.power(np.clip(probabilities, 1e-12, 1.0), 1.0 / temperature)
    return scores / scores.sum(axis=1, keepdims=True)


def evaluate(
    inputs: Sequence[str],
    expected: Sequence[str],
    outputs: Sequence[str],
    probabilities: np.ndarray,
    confidence_threshold: float = 0.0,
) -> Evaluation:
    """Score the model's top answers against `expected` (outputs it never learned are errors)."""
    best = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(best)), best]
    predicted = [outputs[index] for index in best]
    right = np.array([p == e for p, e in zip(predicted, expected, strict=True)], dtype=bool)
    per_output = _per_output(expected, predicted)
    supports = np.array([score.support for score in per_output], dtype=float)
    f1s = np.array([score.f1 for score in per_output])
    seen = supports > 0
    answered = confidence >= confidence_threshold
    ece, reliability = calibration(confidence, right)
    known = set(outputs)
    return Evaluation(
        example_count=len(expected),
        accuracy=float(right.mean()) if len(right) else 0.0,
        macro_f1=float(f1s[seen].mean()) if seen.any() else 0.0,
        weighted_f1=float((f1s * supports).sum() / supports.sum()) if supports.sum() else 0.0,
        per_output=per_output,
        confused_pairs=_confused_pairs(inputs, expected, predicted),
        expected_calibration_error=ece,
        reliability=reliability,
        log_loss=log_loss(expected, outputs, probabilities),
        confidence_threshold=confidence_threshold,
        coverage=float(answered.mean()) if len(answered) else 0.0,
        accuracy_when_answered=float(right[answered].mean()) if answered.any() else 0.0,
        unseen_outputs=sorted({e for e in expected if e not in known}),
    )


def calibration(
    confidence: np.ndarray, right: np.ndarray, bins: int = RELIABILITY_BINS
) -> tuple[float, list[ReliabilityBin]]:
    """Expected calibration error over equal-width confidence bins, and the reliability table."""
    table, ece = [], 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i + 1]]; confidence 0 goes to the first bin.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        accuracy = float(right[members].mean()) if count else 0.0
        mean_confidence = float(confidence[members].mean()) if count else 0.0
        ece += count / max(1, len(confidence)) * abs(accuracy - mean_confidence)
        table.append(ReliabilityBin(edges[i], edges[i + 1], count, accuracy, mean_confidence))
    return float(ece), table


def log_loss(expected: Sequence[str], outputs: Sequence[str], probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the expected outputs the model knows."""
    column = {output: index for index, output in enumerate(outputs)}
    rows = [(row, column[e]) for row, e in enumerate(expected) if e in column]
    if not rows:
        return 0.0
    picked = probabilities[[r for r, _ in rows], [c for _, c in rows]]
    return float(-np.log(np.clip(picked, 1e-12, 1.0)).mean())


def _per_output(expected: Sequence[str], predicted: Sequence[str]) -> list[OutputScore]:
    support = collections.Counter(expected)
    predicted_count = collections.Counter(predicted)
    true_positive = collections.Counter(
        e for e, p in zip(expected, predicted, strict=True) if e == p
    )
    scores = []
    for output in sorted(set(support) | set(predicted_count)):
        hits = true_positive[output]
        precision = hits / predicted_count[output] if predicted_count[output] else 0.0
        recall = hits / support[output] if support[output] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores.append(OutputScore(output, precision, recall, f1, support[output]))
    return scores


def _confused_pairs(
    inputs: Sequence[str], expected: Sequence[str], predicted: Sequence[str]
) -> list[tuple[str, str, int, list[str]]]:
    """The most frequent (expected, predicted) mistakes, with a few of their inputs."""
    examples: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for text, e, p in zip(inputs, expected, predicted, strict=True):
        if e != p:
            counts[(e, p)] += 1
            if len(examples[(e, p)]) < EXAMPLES_PER_PAIR:
                examples[(e, p)].append(text)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:CONFUSED_PAIRS]
    return [(e, p, count, examples[(e, p)]) for (e, p), count in ranked]


@dataclasses.dataclass(frozen=True)
class OutOfScopeRows:
    """What out-of-scope measures need of each evaluation example's answer, one row each."""

    out_of_scope: np.ndarray
    """Bool: the expected output is the fallback output (an out-of-scope example)."""
    right: np.ndarray
    """Bool: the best output is the expected one."""
    confidence: np.ndarray
    """The best output's confidence, with the version's temperature."""
    scores: np.ndarray
    """The out-of-scope score (engines/out_of_scope.py)."""
    best_is_fallback: np.ndarray
    """Bool: the best output is the fallback output itself (a version trained on examples
    labelled with it answers it like any output)."""

    @classmethod
    def of(
        cls,
        expected: Sequence[str],
        outputs: Sequence[str],
        probabilities: np.ndarray,
        scores: np.ndarray,
        fallback: str,
    ) -> OutOfScopeRows:
        """The rows of answers given as tempered `probabilities` and out-of-scope `scores`."""
        best = probabilities.argmax(axis=1)
        predicted = [outputs[index] for index in best]
        return cls(
            out_of_scope=np.array([e == fallback for e in expected], dtype=bool),
            right=np.array([p == e for p, e in zip(predicted, expected, strict=True)], dtype=bool),
            confidence=probabilities[np.arange(len(best)), best].astype(np.float64),
            scores=np.asarray(scores, dtype=np.float64),
            best_is_fallback=np.array([p == fallback for p in predicted], dtype=bool),
        )

    def flagged(self, confidence_threshold: float, out_of_scope_threshold: float) -> np.ndarray:
        """Bool: the answer is the fallback output, as InvokeAgent decides it."""
        return (
            (self.confidence < confidence_threshold)
            | (self.scores > out_of_scope_threshold)
            | self.best_is_fallback
        )


@dataclasses.dataclass(frozen=True)
class OutOfScope:
    """How the fallback catches out-of-scope examples at one setting."""

    out_of_scope_count: int
    in_scope_count: int
    auroc: float
    """Of the out-of-scope score: out-of-scope against in-scope examples (ties count half)."""
    recall: float
    """Share of the out-of-scope examples flagged."""
    precision: float
    """Share of the flagged examples that are out of scope (0 when none is)."""
    in_scope_accuracy: float
    """Share of the in-scope examples answered with their expected output."""
    in_scope_coverage: float
    """Share of the in-scope examples answered (not flagged)."""
    confidence_threshold: float
    out_of_scope_threshold: float


def out_of_scope(
    rows: OutOfScopeRows, confidence_threshold: float, out_of_scope_threshold: float
) -> OutOfScope | None:
    """Out-of-scope detection at a setting; None when no example is out of scope."""
    positive = rows.out_of_scope
    if not positive.any():
        return None
    flagged = rows.flagged(confidence_threshold, out_of_scope_threshold)
    in_scope = ~positive
    answered_in_scope = in_scope & ~flagged
    return OutOfScope(
        out_of_scope_count=int(positive.sum()),
        in_scope_count=int(in_scope.sum()),
        auroc=auroc(rows.scores, positive),
        recall=float(flagged[positive].mean()),
        precision=float(positive[flagged].mean()) if flagged.any() else 0.0,
        in_scope_accuracy=float((rows.right & answered_in_scope).sum() / in_scope.sum())
        if in_scope.any()
        else 0.0,
        in_scope_coverage=float(answered_in_scope.sum() / in_scope.sum())
        if in_scope.any()
        else 0.0,
        confidence_threshold=confidence_threshold,
        out_of_scope_threshold=out_of_scope_threshold,
    )


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the `positive` rows against the others.

    The Mann-Whitney statistic over mid-ranks: the chance that a positive row scores above a
    negative one, ties counting one half. 0 when either kind is missing.
    """
    positives = int(positive.sum())
    negatives = len(positive) - positives
    if not positives or not negatives:
        return 0.0
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    _values, first, counts = np.unique(ordered, return_index=True, return_counts=True)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # 1-based mid-ranks
    wins = ranks[positive].sum() - positives * (positives + 1) / 2.0
    return float(wins / (positives * negatives))
