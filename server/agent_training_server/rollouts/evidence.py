"""What each arm of a rollout did, from the answers recorded under it and their feedback."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from agent_training_server.domain import Feedback, Invocation, Rollout
from agent_training_server.rollouts.assignment import ACTIVE, CANDIDATE, SHADOW

Z_95 = 1.959963984540054
"""The standard normal's 97.5% quantile: two-sided 95% intervals."""


@dataclasses.dataclass(frozen=True)
class ArmEvidence:
    """One arm's answers since the rollout started (shadow answers are not an arm's)."""

    arm: str
    version_id: str
    answers: int = 0
    feedback: int = 0
    successes: int = 0
    """Answers with positive feedback (reward above 0)."""
    fallback_rate: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0

    @property
    def success_rate(self) -> float:
        """Share of the answers with feedback that succeeded (0 without feedback)."""
        return self.successes / self.feedback if self.feedback else 0.0

    @property
    def success_interval(self) -> tuple[float, float]:
        """The success rate's 95% Wilson score interval ((0, 1) without feedback)."""
        return wilson(self.successes, self.feedback)


@dataclasses.dataclass(frozen=True)
class ShadowEvidence:
    """A shadow rollout's comparison of the candidate with the active version."""

    compared: int = 0
    agreement: float = 0.0
    logged_feedback: int = 0
    estimated_success_rate: float = 0.0
    estimated_standard_error: float = 0.0


@dataclasses.dataclass(frozen=True)
class Evidence:
    """Both arms, and the shadow comparison (empty for a canary)."""

    active: ArmEvidence
    candidate: ArmEvidence
    shadow: ShadowEvidence

    def figures(self) -> dict[str, float]:
        """Flat figures, kept with a decision."""
        figures: dict[str, float] = {}
        for arm in (self.active, self.candidate):
            low, high = arm.success_interval
            figures.update(
                {
                    f"{arm.arm}_answers": float(arm.answers),
                    f"{arm.arm}_feedback": float(arm.feedback),
                    f"{arm.arm}_success_rate": arm.success_rate,
                    f"{arm.arm}_success_rate_low": low,
                    f"{arm.arm}_success_rate_high": high,
                    f"{arm.arm}_fallback_rate": arm.fallback_rate,
                }
            )
        if self.shadow.compared:
            figures["shadow_agreement"] = self.shadow.agreement
            figures["shadow_estimated_success_rate"] = self.shadow.estimated_success_rate
        return figures


def wilson(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ((0, 1) for no trials)."""
    if trials == 0:
        return 0.0, 1.0
    rate = successes / trials
    centre = (rate + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials))
    half /= 1 + z * z / trials
    return max(0.0, centre - half), min(1.0, centre + half)


def gather(rollout: Rollout, answers: Sequence[tuple[Invocation, Feedback | None]]) -> Evidence:
    """The evidence of a rollout from its recorded answers (with their feedback, if any)."""
    by_arm: dict[str, list[tuple[Invocation, Feedback | None]]] = {ACTIVE: [], CANDIDATE: []}
    shadows: list[Invocation] = []
    for invocation, feedback in answers:
        if invocation.arm == SHADOW:
            shadows.append(invocation)
        elif invocation.arm in by_arm:
            by_arm[invocation.arm].append((invocation, feedback))
    versions = {ACTIVE: rollout.active_version_id, CANDIDATE: rollout.candidate_version_id}
    active, candidate = (_arm(arm, versions[arm], by_arm[arm]) for arm in (ACTIVE, CANDIDATE))
    return Evidence(active, candidate, _shadow(by_arm[ACTIVE], shadows))


def _arm(
    arm: str, version_id: str, answers: Sequence[tuple[Invocation, Feedback | None]]
) -> ArmEvidence:
    if not answers:
        return ArmEvidence(arm, version_id)
    rewards = [feedback.reward for _, feedback in answers if feedback is not None]
    latency = np.array([invocation.latency_ms for invocation, _ in answers])
    return ArmEvidence(
        arm,
        version_id,
        answers=len(answers),
        feedback=len(rewards),
        successes=sum(reward > 0 for reward in rewards),
        fallback_rate=sum(invocation.is_fallback for invocation, _ in answers) / len(answers),
        latency_p50_ms=float(np.percentile(latency, 50)),
        latency_p95_ms=float(np.percentile(latency, 95)),
    )


def _shadow(
    active: Sequence[tuple[Invocation, Feedback | None]], shadows: Sequence[Invocation]
) -> ShadowEvidence:
    """Agreement, and the candidate's success estimated from the active answers' feedback.

    Self-normalised importance sampling: the candidate always gives its own answer, so a logged
    answer weighs 1 / propensity where the two agree and 0 where they do not.
    """
    shadow_of = {shadow.shadow_of: shadow for shadow in shadows}
    pairs = [(a, f, shadow_of[a.invocation_id]) for a, f in active if a.invocation_id in shadow_of]
    if not pairs:
        return ShadowEvidence()
    agreement = sum(a.output == s.output for a, _, s in pairs) / len(pairs)
    logged = [(a, f, s) for a, f, s in pairs if f is not None]
    weights = np.array([float(a.output == s.output) / a.propensity for a, _, s in logged])
    success = np.array([float(f.reward > 0) for _, f, _ in logged if f is not None])
    estimate = error = 0.0
    if weights.sum() > 0:
        estimate = float((weights * success).sum() / weights.sum())
        error = float(np.sqrt(((weights * (success - estimate)) ** 2).sum()) / weights.sum())
    return ShadowEvidence(len(pairs), agreement, len(logged), estimate, error)
