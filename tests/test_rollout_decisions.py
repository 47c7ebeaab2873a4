"""The rollout decision rule: its statistic against hand computations, and its error rates.

The simulations check the rule after every answer with feedback, as a running rollout does: under
equal rates the share of runs that ever claim a difference stays under alpha (plus binomial
slack), while a 5-point difference is decided the right way in nearly every run.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from agent_training_server.rollouts import decisions
from agent_training_server.rollouts.decisions import ArmCounts, decide, log_evidence

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE


def null_variance(s_a: int, n_a: int, s_c: int, n_c: int, theta_0: float) -> float:
    """Variance of p_c - p_a at rates around the pooled one that differ by exactly theta_0."""
    pooled = (s_a + s_c + 1) / (n_a + n_c + 2)
    rate_a = pooled - theta_0 * n_c / (n_a + n_c)
    rate_c = pooled + theta_0 * n_a / (n_a + n_c)
    return rate_a * (1 - rate_a) / n_a + rate_c * (1 - rate_c) / n_c


def by_hand(estimate: float, variance: float) -> float:
    """log of the half-normal(0.05) mixture ratio for H0 theta <= 0, theta estimated at
    ``estimate`` with ``variance``, written out step by step."""
    tau = 0.05
    shrink = 1 + tau**2 / variance
    x = (estimate / variance) * tau / math.sqrt(shrink)
    return math.log(2 * NormalDist().cdf(x)) + x**2 / 2 - math.log(shrink) / 2


def test_promote_statistic_matches_the_hand_computation() -> None:
    verdict = decide(ArmCounts(800, 1000), ArmCounts(840, 1000), CONFIDENCE, 0.0, 30)
    variance = null_variance(800, 1000, 840, 1000, 0.0)
    # Pooled rate 1641 / 2002 = 0.8197: variance 2 x 0.8197 x 0.1803 / 1000.
    assert variance == pytest.approx(2 * (1641 / 2002) * (361 / 2002) / 1000)
    expected = by_hand(0.04, variance)
    assert verdict.evidence["log_promote_ratio"] == pytest.approx(expected, rel=1e-9)
    assert verdict.evidence["difference"] == pytest.approx(0.04)
    assert verdict.evidence["active_rate"] == 0.8
    assert verdict.evidence["candidate_rate"] == 0.84
    assert verdict.evidence["candidate_trials"] == 1000
    assert verdict.evidence["log_threshold"] == pytest.approx(math.log(40))
    # 0.04 over a standard error of 0.0172 is z = 2.33: a single fixed-horizon test would reject,
    # but the mixture ratio (about e^2 = 7) is far from 2 / alpha = 40: the rollout keeps going.
    assert math.sqrt(variance) == pytest.approx(0.0172, abs=1e-4)
    assert verdict.evidence["log_promote_ratio"] == pytest.approx(1.98, abs=0.02)
    assert verdict.action is None


def test_abort_statistic_tests_the_difference_plus_the_margin() -> None:
    verdict = decide(ArmCounts(800, 1000), ArmCounts(740, 1000), CONFIDENCE, 0.02, 30)
    # H0 theta >= -0.02: the observed -0.06 is 0.04 beyond the margin; the variance is taken at
    # rates 0.02 apart.
    variance = null_variance(800, 1000, 740, 1000, -0.02)
    expected = by_hand(0.04, variance)
    assert verdict.evidence["log_abort_ratio"] == pytest.approx(expected, rel=1e-9)
    assert verdict.evidence["difference"] == pytest.approx(-0.06)


def test_closed_form_equals_the_mixture_integral() -> None:
    # The definition: integral over theta > 0 of exp(theta S - theta^2 I / 2) times the
    # half-normal density 2 phi(theta / tau) / tau, computed numerically.
    s_a, n_a, s_c, n_c = 610, 800, 640, 790
    _, log_promote, _ = log_evidence(s_a, n_a, s_c, n_c, 0.0)
    information = 1 / null_variance(s_a, n_a, s_c, n_c, 0.0)
    score = (s_c / n_c - s_a / n_a) * information
    theta = np.linspace(0, 0.6, 600_001)
    tau = decisions.TAU
    density = 2 * np.exp(-0.5 * (theta / tau) ** 2) / (tau * math.sqrt(2 * math.pi))
    integrand = np.exp(theta * score - theta**2 * information / 2) * density
    integral = float(np.sum((integrand[1:] + integrand[:-1]) / 2 * np.diff(theta)))
    assert float(log_promote) == pytest.approx(math.log(integral), abs=1e-6)


def test_a_clear_improvement_is_promoted_with_its_evidence() -> None:
    verdict = decide(ArmCounts(800, 1000), ArmCounts(880, 1000), CONFIDENCE, 0.0, 30)
    assert verdict.action == "promote"
    assert verdict.evidence["log_promote_ratio"] >= math.log(40)
    assert verdict.evidence["log_abort_ratio"] < 0
    assert "+8.0 points" in verdict.reason
    swapped = decide(ArmCounts(880, 1000), ArmCounts(800, 1000), CONFIDENCE, 0.0, 30)
    assert swapped.action == "abort"
    # With margin 0 the two sides are mirror images: swapping the arms swaps the statistics.
    assert swapped.evidence["log_abort_ratio"] == pytest.approx(
        verdict.evidence["log_promote_ratio"], rel=1e-12
    )


def test_higher_confidence_needs_more_evidence() -> None:
    counts = ArmCounts(800, 1000), ArmCounts(860, 1000)
    assert decide(*counts, CONFIDENCE, 0.0, 30).action == "promote"
    verdict = decide(*counts, 0.9999, 0.0, 30)
    assert verdict.evidence["log_threshold"] == pytest.approx(math.log(2 / 1e-4))
    assert verdict.evidence["log_promote_ratio"] < verdict.evidence["log_threshold"]
    assert verdict.action is None


def test_nothing_is_decided_before_both_arms_have_min_feedback() -> None:
    perfect, poor = ArmCounts(40, 40), ArmCounts(8, 40)
    assert decide(poor, perfect, CONFIDENCE, 0.0, 40).action == "promote"
    assert decide(perfect, poor, CONFIDENCE, 0.0, 40).action == "abort"
    for min_feedback in (41, 100):
        verdict = decide(poor, perfect, CONFIDENCE, 0.0, min_feedback)
        assert verdict.action is None
        assert f"waiting for {min_feedback}" in verdict.reason
        assert "log_promote_ratio" not in verdict.evidence
    # One arm short is enough to wait.
    assert decide(ArmCounts(8, 39), ArmCounts(300, 300), CONFIDENCE, 0.0, 40).action is None
    assert decide(ArmCounts(8, 300), ArmCounts(39, 39), CONFIDENCE, 0.0, 40).action is None
    assert decide(ArmCounts(8, 40), ArmCounts(300, 300), CONFIDENCE, 0.0, 40).action == "promote"


def aborting_successes(margin: float, n: int = 2000) -> int:
    """The most candidate successes out of n that still abort against an active 1600 of n."""
    aborting = [
        k
        for k in range(1000, 1600)
        if decide(ArmCounts(1600, n), ArmCounts(k, n), CONFIDENCE, margin, 30).action == "abort"
    ]
    return max(aborting)


def test_the_margin_moves_the_abort_line_and_only_it() -> None:
    line_0 = aborting_successes(0.0)
    line_2 = aborting_successes(0.02)
    line_5 = aborting_successes(0.05)
    # 2 points of 2,000 answers is 40 successes, 5 points 100; the line moves by that much
    # (give or take the change in the variance with the rate).
    assert 35 <= line_0 - line_2 <= 45
    assert 90 <= line_0 - line_5 <= 110
    # A 4.5-point drop aborts without a margin and not with a 5-point one.
    worse = ArmCounts(1600, 2000), ArmCounts(1510, 2000)
    assert decide(*worse, CONFIDENCE, 0.0, 30).action == "abort"
    assert decide(*worse, CONFIDENCE, 0.05, 30).action is None
    better = ArmCounts(1600, 2000), ArmCounts(1700, 2000)
    for margin in (0.0, 0.05):
        verdict = decide(*better, CONFIDENCE, margin, 30)
        assert verdict.action == "promote"
        assert verdict.evidence["log_promote_ratio"] == pytest.approx(
            decide(*better, CONFIDENCE, 0.0, 30).evidence["log_promote_ratio"]
        )


def test_impossible_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="successes"):
        ArmCounts(11, 10)
    with pytest.raises(ValueError, match="successes"):
        ArmCounts(-1, 10)
    arm = ArmCounts(8, 10)
    for confidence in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="confidence"):
            decide(arm, arm, confidence, 0.0, 30)
    with pytest.raises(ValueError, match="abort_margin"):
        decide(arm, arm, CONFIDENCE, -0.01, 30)


# Simulations: every answer is checked ------------------------------------------------------


def simulate(
    seed: int, runs: int, horizon: int, p_active: float, p_candidate: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (s_a, n_a, s_c, n_c) after each answer; each answer goes to either arm at 50%."""
    rng = np.random.default_rng(seed)
    to_candidate = rng.random((runs, horizon)) < 0.5
    success = rng.random((runs, horizon)) < np.where(to_candidate, p_candidate, p_active)
    n_c = np.cumsum(to_candidate, axis=1)
    n_a = np.arange(1, horizon + 1) - n_c
    return (
        np.cumsum(success & ~to_candidate, axis=1),
        n_a,
        np.cumsum(success & to_candidate, axis=1),
        n_c,
    )


def first_decisions(
    counts: tuple[np.ndarray, ...], margin: float = 0.0, min_feedback: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Per run: the answer index of the first decision (-1: none) and whether it was promote.

    Vectorised with log_evidence; every decision found is confirmed by ``decide`` itself at that
    answer, and ``decide`` is confirmed to have kept going at the answer before.
    """
    s_a, n_a, s_c, n_c = counts
    ready = (n_a >= min_feedback) & (n_c >= min_feedback)
    _, log_p, log_q = log_evidence(s_a, np.maximum(n_a, 1), s_c, np.maximum(n_c, 1), margin)
    threshold = decisions.log_threshold(CONFIDENCE)
    decided = ready & ((log_p >= threshold) | (log_q >= threshold))
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), -1)
    runs = np.arange(len(first))
    promoted = (first >= 0) & (log_p[runs, first] >= threshold)
    for run in np.nonzero(first >= 0)[0]:
        at = first[run]

        def ask(i: int, run: int = run) -> str | None:
            active = ArmCounts(int(s_a[run, i]), int(n_a[run, i]))
            candidate = ArmCounts(int(s_c[run, i]), int(n_c[run, i]))
            return decide(active, candidate, CONFIDENCE, margin, min_feedback).action

        assert ask(at) == ("promote" if promoted[run] else "abort")
        assert ask(at - 1) is None
    return first, promoted


def test_equal_rates_checked_after_every_answer_rarely_claim_a_difference() -> None:
    runs, horizon = 300, 4000  # about 2,000 answers with feedback per arm
    counts = simulate(seed=7, runs=runs, horizon=horizon, p_active=0.8, p_candidate=0.8)
    first, _ = first_decisions(counts)
    wrong = int((first >= 0).sum())
    # Binomial slack: alpha plus 3 standard deviations of a share of 300 runs at alpha.
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / runs)  # 0.088, i.e. 26 runs
    assert wrong / runs <= bound, f"{wrong} of {runs} runs claimed a difference"
    # The same simulation catches a z-test repeated after every answer: it "finds" a
    # difference in about half of these runs.
    s_a, n_a, s_c, n_c = counts
    with np.errstate(divide="ignore", invalid="ignore"):
        p_a, p_c = s_a / n_a, s_c / n_c
        z = (p_c - p_a) / np.sqrt(p_a * (1 - p_a) / n_a + p_c * (1 - p_c) / n_c)
    ready = (n_a >= 30) & (n_c >= 30)
    naive_wrong = float(
        (ready & (np.abs(z) > NormalDist().inv_cdf(1 - ALPHA / 2))).any(axis=1).mean()
    )
    assert naive_wrong > 3 * bound


@pytest.mark.parametrize(
    ("p_candidate", "expected"), [(0.85, "promote"), (0.75, "abort")], ids=["better", "worse"]
)
def test_a_five_point_difference_is_decided_the_right_way(
    p_candidate: float, expected: str
) -> None:
    runs, horizon = 20, 10_000  # about 5,000 answers with feedback per arm
    counts = simulate(seed=11, runs=runs, horizon=horizon, p_active=0.8, p_candidate=p_candidate)
    first, promoted = first_decisions(counts)
    decided = first >= 0
    right = decided & (promoted if expected == "promote" else ~promoted)
    assert right.sum() >= 19, f"{right.sum()} of {runs} runs decided {expected}"
    assert (decided & ~right).sum() == 0, "a run decided the wrong way"
    # Typically decided within a couple of thousand answers with feedback per arm.
    n_a, n_c = counts[1], counts[3]
    per_arm = np.minimum(n_a[decided, first[decided]], n_c[decided, first[decided]])
    assert np.median(per_arm) <= 2000
