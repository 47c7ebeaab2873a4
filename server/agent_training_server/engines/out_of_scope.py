"""The out-of-scope score: how unlike an agent's training data an input is, in [0, 1].

Every agent answers with a confidence; one minus it is the first signal. Encoder agents (few_shot,
transfer) add a second: the distance of the input's embedding, in the *pretrained* encoder's
space, to its nearest training examples. Fine-tuning pulls every input, out-of-scope ones too,
towards some output's cluster; the pretrained space still tells a message about exchange rates
from the card messages an agent was trained on. Their weighted mean is the score:

    score = (1 - confidence + DISTANCE_WEIGHT * distance) / (1 + DISTANCE_WEIGHT)

n-gram agents (supervised, reinforcement) score ``1 - confidence``. The score orders inputs; it
is not a probability: the threshold that keeps a given share of in-scope messages is found on
evaluation data (AnalyzeAndOptimize's out-of-scope goal). Choices measured on banking77-oos's
valid files: docs/out-of-scope.md.
"""

from __future__ import annotations

import numpy as np
import torch

from agent_training_server.engines.integrity import DamagedFile

PREFIX = "out_of_scope."
"""Tensors whose names start so belong to the out-of-scope score, not to the model."""

KNOWN_EMBEDDINGS = "out_of_scope.embeddings"
"""Tensor name: the training examples' unit-length pretrained embeddings, float16, one row each."""

NEIGHBOURS = 10
"""Training examples whose mean cosine similarity makes the distance (kNN-10)."""

DISTANCE_WEIGHT = 2.0
"""The distance's weight against one minus the confidence (chosen among 0 to 8, and 100, on
banking77-oos's valid files, for few_shot and transfer alike)."""


def unsure(probabilities: np.ndarray) -> np.ndarray:
    """One minus each row's best probability."""
    return 1.0 - probabilities.max(axis=1)


def neighbour_distance(embeddings: np.ndarray, known: np.ndarray) -> np.ndarray:
    """One minus the mean cosine similarity of each row to its NEIGHBOURS nearest known rows.

    Both are unit-length rows; the result is in [0, 2] (in practice under 1).
    """
    similarities = embeddings @ known.T
    k = min(NEIGHBOURS, similarities.shape[1])
    nearest = -np.partition(-similarities, k - 1, axis=1)[:, :k]
    return 1.0 - nearest.mean(axis=1)


def score(probabilities: np.ndarray, distance: np.ndarray | None = None) -> np.ndarray:
    """Out-of-scope scores in [0, 1], from the probabilities and, for encoders, the distance."""
    if distance is None:
        return unsure(probabilities)
    combined = (unsure(probabilities) + DISTANCE_WEIGHT * distance) / (1.0 + DISTANCE_WEIGHT)
    return np.clip(combined, 0.0, 1.0)


def known_embeddings(embeddings: torch.Tensor, earlier: torch.Tensor | None) -> torch.Tensor:
    """What a version stores to measure distances against, after ``earlier`` rows.

    Unit-length rows in float16: half the size, similarities move by about 1e-3. ``earlier``:
    those of the version an extension starts from.
    """
    rows = torch.nn.functional.normalize(embeddings.float(), dim=1).half()
    return rows if earlier is None else torch.cat([earlier.half(), rows])


def check(tensors: dict[str, torch.Tensor], dimensions: int) -> None:
    """Stored known embeddings, where present, are rows of ``dimensions`` finite values.

    Raises:
        DamagedFile: they are not.
    """
    known = tensors.get(KNOWN_EMBEDDINGS)
    if known is None:
        return  # a version trained before the distance existed: it scores 1 - confidence
    if known.dim() != 2 or known.shape[1] != dimensions or known.shape[0] < 1:
        raise DamagedFile(
            f"{KNOWN_EMBEDDINGS} has shape {tuple(known.shape)}; expected (n >= 1, {dimensions})"
        )
    if not bool(torch.isfinite(known).all()):
        raise DamagedFile(f"{KNOWN_EMBEDDINGS} holds values that are not finite")
