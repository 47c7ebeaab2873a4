"""The latency bound minimize_latency states: what no variant of a model's weights can beat."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_training_server.analysis import compaction
from agent_training_server.engines import registry, supervised
from tests.engines.test_supervised import banking, train


def test_the_bound_divides_by_the_one_feature_model_where_measured() -> None:
    measured = compaction.Variant(1.0, False, 0.9, 0.30, 1000, featurise_p50_ms=0.10)
    assert compaction.fastest_possible(measured) == pytest.approx(3.0)
    floored = compaction.Variant(1.0, False, 0.9, 0.30, 1000, 0.10, floor_p50_ms=0.20)
    assert compaction.fastest_possible(floored) == pytest.approx(1.5)


def test_measure_times_the_model_cut_to_its_one_strongest_feature(tmp_path: Path) -> None:
    examples = banking()
    artifact = train(tmp_path, examples, epochs=2)
    texts = [example.input for example in examples[:40]]
    labels = [example.expected_output for example in examples[:40]]
    smallest = supervised.compact(artifact.tensors, 0.0, False)
    assert len(smallest["vocabulary"]) == 1
    scores = registry.load_predictor(artifact.spec, smallest).predict_proba(texts)
    assert scores.shape == (40, len(artifact.outputs))
    baseline, variants = compaction.measure(artifact.spec, artifact.tensors, texts, labels)
    assert baseline.floor_p50_ms > 0
    assert len(variants) == len(compaction.CANDIDATES)
    assert all(variant.floor_p50_ms == 0 for variant in variants)  # measured once, on the model
