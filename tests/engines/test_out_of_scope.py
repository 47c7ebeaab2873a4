"""The out-of-scope score's parts, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent_training_server.engines import out_of_scope
from agent_training_server.engines.integrity import DamagedFile


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, 8))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_distance_is_one_minus_the_mean_similarity_of_the_nearest_ten() -> None:
    known, queries = unit_rows(30, 0), unit_rows(5, 1)
    expected = [1 - np.sort(known @ query)[-10:].mean() for query in queries]
    assert out_of_scope.neighbour_distance(queries, known) == pytest.approx(expected)


def test_fewer_known_rows_than_neighbours_use_them_all() -> None:
    known, queries = unit_rows(3, 2), unit_rows(2, 3)
    expected = [1 - (known @ query).mean() for query in queries]
    assert out_of_scope.neighbour_distance(queries, known) == pytest.approx(expected)


def test_a_known_input_is_closer_than_an_unknown_one() -> None:
    known = unit_rows(40, 4)
    near = known[:1] + 0.01
    near /= np.linalg.norm(near)
    far = -known[:1]
    distances = out_of_scope.neighbour_distance(np.vstack([near, far]), known)
    assert distances[0] < distances[1]


def test_the_score_weighs_the_distance_twice_and_stays_in_zero_to_one() -> None:
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5], [1.0, 0.0]])
    distance = np.array([0.3, 0.9, 2.0])
    scores = out_of_scope.score(probabilities, distance)
    assert scores[:2] == pytest.approx([(0.1 + 0.6) / 3, (0.5 + 1.8) / 3])
    assert scores[2] == 1.0  # clipped: (0 + 4) / 3
    assert out_of_scope.score(probabilities) == pytest.approx([0.1, 0.5, 0.0])


def test_known_embeddings_are_unit_rows_in_half_precision_after_earlier_ones() -> None:
    earlier = torch.nn.functional.normalize(torch.ones(2, 4), dim=1).half()
    stored = out_of_scope.known_embeddings(torch.tensor([[3.0, 0, 4, 0]]), earlier)
    assert stored.dtype == torch.float16 and stored.shape == (3, 4)
    assert torch.equal(stored[:2], earlier)
    assert stored[2].float() == pytest.approx(torch.tensor([0.6, 0, 0.8, 0]), abs=1e-3)


@pytest.mark.parametrize(
    "known",
    [torch.zeros(0, 4), torch.zeros(3, 5), torch.zeros(4), torch.full((2, 4), float("nan"))],
)
def test_damaged_known_embeddings_are_refused(known: torch.Tensor) -> None:
    with pytest.raises(DamagedFile):
        out_of_scope.check({out_of_scope.KNOWN_EMBEDDINGS: known}, 4)


def test_a_version_without_known_embeddings_passes_the_check() -> None:
    out_of_scope.check({}, 4)
