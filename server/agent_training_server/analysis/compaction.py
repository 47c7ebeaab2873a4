"""Smaller (and maybe faster) variants of a supervised n-gram model, measured on the evaluation set.

Candidates: int8 weights with one scale per output, and keeping only the features with the
largest weights (50%, 25%, 10%), alone or with int8. Each is rebuilt as a predictor and measured
like the original: accuracy on the evaluation set, p50 latency at batch size 1, bytes of its
weights as safetensors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import safetensors.torch

from agent_training_server.analysis import optimize
from agent_training_server.engines import registry, supervised

CANDIDATES = ((1.0, True), (0.5, False), (0.5, True), (0.25, True), (0.1, True))
"""(fraction of features kept, int8 weights) pairs tried."""

ACCURACY_SLACK = 0.005
"""Accuracy a candidate may lose and still be suggested (half a point)."""

LATENCY_CALLS = 200


@dataclasses.dataclass(frozen=True)
class Variant:
    """A measured model variant."""

    keep: float
    int8: bool
    accuracy: float
    p50_ms: float
    size_bytes: int
    featurise_p50_ms: float = 0.0
    """Of p50_ms, the featurising of the text: the part no variant of the weights changes."""
    floor_p50_ms: float = 0.0
    """p50 of the same model cut to its one strongest feature: featurising plus the fixed cost of
    scoring, the least any variant of the weights can take (0: not measured)."""

    @property
    def name(self) -> str:
        """In words, e.g. "int8 weights, 50% of features"."""
        parts = ["int8 weights"] if self.int8 else []
        if self.keep < 1.0:
            parts.append(f"the {self.keep:.0%} strongest features")
        return ", ".join(parts) or "the model as trained"


def measure(
    spec: dict[str, Any],
    tensors: dict[str, Any],
    inputs: Sequence[str],
    expected: Sequence[str],
) -> tuple[Variant, list[Variant]]:
    """(the model as it is, every candidate), each measured the same way."""
    baseline = dataclasses.replace(
        _measure(spec, tensors, inputs, expected, 1.0, False),
        floor_p50_ms=_one_feature_p50_ms(spec, tensors, inputs),
    )
    return baseline, [
        _measure(spec, supervised.compact(tensors, keep, int8), inputs, expected, keep, int8)
        for keep, int8 in CANDIDATES
    ]


def _measure(
    spec: dict[str, Any],
    tensors: dict[str, Any],
    inputs: Sequence[str],
    expected: Sequence[str],
    keep: float,
    int8: bool,
) -> Variant:
    predictor = registry.load_predictor(spec, tensors)
    assert isinstance(predictor, supervised.SupervisedPredictor)  # compaction is n-gram only
    best = predictor.predict_proba(list(inputs)).argmax(axis=1)
    right = [predictor.outputs[b] == e for b, e in zip(best, expected, strict=True)]
    latency = optimize.measure_latency(
        lambda texts: predictor.predict_proba(texts), inputs, 1, LATENCY_CALLS
    )
    featurising = optimize.measure_latency(
        lambda texts: predictor.features(texts).weights, inputs, 1, LATENCY_CALLS
    )
    size = len(safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()}))
    return Variant(keep, int8, float(np.mean(right)), latency.p50_ms, size, featurising.p50_ms)


def _one_feature_p50_ms(
    spec: dict[str, Any], tensors: dict[str, Any], inputs: Sequence[str]
) -> float:
    """p50 at batch 1 of the model cut to a single feature (`Variant.floor_p50_ms`)."""
    smallest = registry.load_predictor(spec, supervised.compact(tensors, 0.0, False))
    return optimize.measure_latency(smallest.predict_proba, inputs, 1, LATENCY_CALLS).p50_ms


def fastest_possible(baseline: Variant) -> float:
    """The most a variant of the weights can speed up a batch-1 call (Amdahl's law).

    A variant changes only the weights: the featurising part of the call stays as it is, and so
    does scoring's fixed cost per call (numpy's calls, the softmax), which the model with a
    single feature measures. Without that measure, featurising alone bounds it.
    """
    return baseline.p50_ms / max(baseline.floor_p50_ms or baseline.featurise_p50_ms, 1e-9)


def acceptable(baseline: Variant, variants: list[Variant]) -> list[Variant]:
    """The variants that lose at most ACCURACY_SLACK of accuracy."""
    return [v for v in variants if v.accuracy >= baseline.accuracy - ACCURACY_SLACK]


def pareto(variants: list[Variant]) -> list[Variant]:
    """The variants no other beats on accuracy, size and latency at once: the trade-offs."""

    def dominates(a: Variant, b: Variant) -> bool:
        no_worse = a.accuracy >= b.accuracy and a.size_bytes <= b.size_bytes
        no_worse = no_worse and a.p50_ms <= b.p50_ms
        better = a.accuracy > b.accuracy or a.size_bytes < b.size_bytes or a.p50_ms < b.p50_ms
        return no_worse and better

    return [v for v in variants if not any(dominates(o, v) for o in variants if o is not v)]
