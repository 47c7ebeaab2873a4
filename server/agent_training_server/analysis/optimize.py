"""Candidate optimisations that are cheap enough to measure on every call.

- improve_calibration: temperature scaling. The temperature is fitted by minimising the
  negative log-likelihood over a grid; its effect is measured by two-fold cross-fitting (fit on
  one half of the evaluation set, measure on the other, and the reverse), so the reported
  "after" is not measured on the data it was fitted on.
- maximize_coverage: a threshold sweep: the lowest confidence threshold whose accuracy on the
  answered inputs stays within half a point of the current one.
- maximize_oos_recall: the lowest out-of-scope threshold that keeps a target share of the
  in-scope examples answered (AdaptAgentBehavior's `oos_recall` target: the highest one that
  flags a target share of the out-of-scope examples). Any threshold between two neighbouring
  scores of the set answers the set alike; the midpoint is taken, so a score that moves in its
  last digits between one batch and another stays on its side.
- latency: the model timed at batch size 1 and at a batch size, on the evaluation inputs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np

from agent_training_server.analysis.metrics import (
    OutOfScopeRows,
    calibration,
    log_loss,
    tempered,
)

TEMPERATURES = np.exp(np.linspace(np.log(0.2), np.log(5.0), 61))
"""Temperatures tried when fitting: 0.2 to 5, evenly spaced in log scale."""

COVERAGE_PRECISION_SLACK = 0.005
"""How much accuracy on answered inputs a lower threshold may give up (half a point)."""


@dataclasses.dataclass(frozen=True)
class TemperatureFit:
    """A fitted temperature and the calibration it gives, measured out of fold."""

    temperature: float
    ece_before: float
    ece_after: float
    log_loss_before: float
    log_loss_after: float


def fit_temperature(
    expected: Sequence[str],
    outputs: Sequence[str],
    probabilities: np.ndarray,
    current: float = 1.0,
) -> TemperatureFit:
    """Fit a temperature for the model's raw `probabilities`; measure it against `current`.

    The temperature is fitted on all the data; its effect is measured by two-fold cross-fitting.
    """
    rows = np.arange(len(expected))
    halves = (rows[::2], rows[1::2])
    after_ece, after_loss = [], []
    for fit_rows, test_rows in (halves, halves[::-1]):
        fit_expected = [expected[i] for i in fit_rows]
        test_expected = [expected[i] for i in test_rows]
        temperature = _best_temperature(fit_expected, outputs, probabilities[fit_rows])
        scaled = tempered(probabilities[test_rows], temperature)
        after_ece.append(_ece(test_expected, outputs, scaled) * len(test_rows))
        after_loss.append(log_loss(test_expected, outputs, scaled) * len(test_rows))
    return TemperatureFit(
        temperature=_best_temperature(expected, outputs, probabilities),
        ece_before=_ece(expected, outputs, tempered(probabilities, current)),
        ece_after=float(sum(after_ece) / len(expected)),
        log_loss_before=log_loss(expected, outputs, tempered(probabilities, current)),
        log_loss_after=float(sum(after_loss) / len(expected)),
    )


def _best_temperature(
    expected: Sequence[str], outputs: Sequence[str], probabilities: np.ndarray
) -> float:
    losses = [log_loss(expected, outputs, tempered(probabilities, t)) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def _ece(expected: Sequence[str], outputs: Sequence[str], probabilities: np.ndarray) -> float:
    best = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(best)), best]
    right = np.array([outputs[b] == e for b, e in zip(best, expected, strict=True)])
    return calibration(confidence, right)[0]


@dataclasses.dataclass(frozen=True)
class ThresholdChoice:
    """A confidence threshold and what it gives."""

    threshold: float
    coverage: float
    accuracy_when_answered: float


def sweep_threshold(
    expected: Sequence[str], outputs: Sequence[str], probabilities: np.ndarray, current: float
) -> tuple[ThresholdChoice, ThresholdChoice]:
    """(current, suggested): the lowest threshold keeping answered accuracy within the slack."""
    best = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(best)), best]
    right = np.array([outputs[b] == e for b, e in zip(best, expected, strict=True)])

    def at(threshold: float) -> ThresholdChoice:
        answered = confidence >= threshold
        accuracy = float(right[answered].mean()) if answered.any() else 0.0
        return ThresholdChoice(threshold, float(answered.mean()), accuracy)

    now = at(current)
    candidates = sorted({0.0, *np.round(confidence[confidence < current], 4).tolist()})
    for threshold in candidates:
        choice = at(threshold)
        if choice.accuracy_when_answered >= now.accuracy_when_answered - COVERAGE_PRECISION_SLACK:
            return now, choice
    return now, now


def retention_threshold(
    rows: OutOfScopeRows, confidence_threshold: float, retention: float
) -> float | None:
    """The lowest out-of-scope threshold keeping `retention` of the in-scope rows answered.

    None when the confidence threshold alone (or the fallback as best output) answers fewer.
    """
    in_scope = ~rows.out_of_scope
    needed = math.ceil(retention * int(in_scope.sum()) - 1e-9)
    answerable = np.sort(rows.scores[in_scope & ~rows.flagged(confidence_threshold, math.inf)])
    if needed < 1 or needed > len(answerable):
        return None
    kept = answerable[needed - 1]  # answered when its score is not above the threshold
    higher = rows.scores[rows.scores > kept]
    return float((kept + higher.min()) / 2) if len(higher) else 1.0


def recall_threshold(
    rows: OutOfScopeRows, confidence_threshold: float, recall: float
) -> tuple[float, bool]:
    """The highest out-of-scope threshold flagging `recall` of the out-of-scope rows.

    Returns (threshold, reached): where no threshold flags that many, 0 (the most any threshold
    flags) and False.
    """
    out_of_scope = rows.out_of_scope
    needed = math.ceil(recall * int(out_of_scope.sum()) - 1e-9)
    other = rows.flagged(confidence_threshold, math.inf)
    missing = needed - int((out_of_scope & other).sum())
    if missing <= 0:
        return 1.0, True
    unflagged = -np.sort(-rows.scores[out_of_scope & ~other])  # highest first
    last = unflagged[missing - 1]  # flagged when its score is above the threshold
    if last <= 0:
        return 0.0, False
    lower = rows.scores[rows.scores < last]
    return float((last + (lower.max() if len(lower) else 0.0)) / 2), True


@dataclasses.dataclass(frozen=True)
class Latency:
    """Latency percentiles of calls at one batch size."""

    batch_size: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    throughput_per_second: float


def measure_latency(
    score: Callable[[list[str]], np.ndarray],
    inputs: Sequence[str],
    batch_size: int,
    calls: int,
) -> Latency:
    """Time `calls` calls of `score` on `batch_size` inputs each, cycling through `inputs`."""
    texts = list(inputs) or ["hello"]
    score(texts[:batch_size])  # warm up: first calls allocate and load lazily
    seconds = []
    for call in range(calls):
        start = (call * batch_size) % len(texts)
        batch = (texts[start:] + texts)[:batch_size]
        started = time.perf_counter()
        score(batch)
        seconds.append(time.perf_counter() - started)
    timings = np.array(seconds) * 1000.0
    return Latency(
        batch_size=batch_size,
        p50_ms=float(np.percentile(timings, 50)),
        p95_ms=float(np.percentile(timings, 95)),
        p99_ms=float(np.percentile(timings, 99)),
        throughput_per_second=batch_size * calls / float(sum(seconds)),
    )


def training_curve_summary(metrics: dict[str, float], configured_epochs: int) -> str:
    """Under- or over-fitting, in words, from the version's final metrics."""
    train = metrics.get("accuracy")
    valid = metrics.get("validation_accuracy")
    if train is None or valid is None or not metrics.get("validation_examples"):
        return "no held-out validation was measured during training"
    epochs = int(metrics.get("epochs_run", configured_epochs) or configured_epochs)
    gap = train - valid
    stopped = (
        f"stopped early after {epochs} of {configured_epochs} epochs"
        if configured_epochs and epochs < configured_epochs
        else f"ran all {epochs} epochs"
    )
    if train < 0.9 and gap < 0.05:
        verdict = "under-fitting: training accuracy is low too; train longer or a larger model"
    elif gap > 0.1:
        verdict = "over-fitting: training accuracy well above validation; more data or fewer epochs"
    else:
        verdict = "fits well: training and validation accuracy are close"
    return f"{verdict} (train {train:.3f}, validation {valid:.3f}; {stopped})"
