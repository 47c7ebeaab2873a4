"""When a rollout decides by itself: an anytime-valid test on the difference of success rates.

The test is the mixture sequential probability ratio test (mSPRT) of Johari, Koomen, Pekelis and
Walsh, "Always valid inference: continuous monitoring of A/B tests" (Operations Research, 2022),
on theta = p_candidate - p_active with the normal approximation of the difference of the two
observed rates (its variance taken at the null's edge), run as two one-sided tests that share
alpha = 1 - confidence:

* promote: H0 theta <= 0 against theta > 0, at alpha / 2;
* abort: H0 theta >= -margin against theta < -margin (the same statistic on -(theta_hat +
  margin)), at alpha / 2.

Each side's statistic is a likelihood ratio mixed over a half-normal prior on the effect (scale
``TAU``), a nonnegative supermartingale under its null. Ville's inequality bounds the chance that
it *ever* reaches 2 / alpha by alpha / 2, so the rule may be applied after every answer with
feedback, for as long as the rollout runs, and the chance of any wrong decision stays under
alpha (up to the normal approximation, checked by simulation in tests/test_rollout_decisions.py
and bench/rollout_decisions.py). A z-test repeated after every answer has no such bound: its
false-positive rate grows with the number of looks.

Per-arm confidence sequences combined by a union bound (Howard, Ramdas, McAuliffe and Sekhon
2021) need no normal approximation but are far slower: simulated, they promote 0.80 -> 0.85
within 5,000 answers per arm in 57% of runs (median 3,826 answers) where this test does in 100%
(median 848), both checked after every answer (docs/rollouts.md, bench/rollout_decisions.py).

Pure: no I/O, no state. ``log_evidence`` works on numpy arrays as well as numbers, so that
simulations can follow thousands of rollouts through every answer with the same formula that
``decide`` applies.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt

TAU = 0.05
"""Scale of the half-normal mixing prior on the effect, in rate points (0.05 = 5 points).

The mixture's ratio grows fastest for effects near the prior's scale, and a new version usually
moves the success rate by a few points. Simulated with every answer checked
(bench/rollout_decisions.py --tau, 300 runs), 0.05 promotes 0.80 -> 0.85 after a median 850
answers per arm where 0.02 needs 1138, and 0.10 needs as many (852) but promotes 0.80 -> 0.83
within 5,000 answers per arm in 77% of runs against 82%. The price of a narrow prior: a huge
difference still waits for a few answers (a candidate at 0% beside 80% aborts at 32 per arm)."""

PROMOTE = "promote"
ABORT = "abort"

_ERFC = np.frompyfunc(math.erfc, 1, 1)

FloatArray = npt.NDArray[np.float64]


@dataclasses.dataclass(frozen=True)
class ArmCounts:
    """Feedback on one arm of a rollout."""

    successes: int
    """Answers whose feedback was a success."""
    trials: int
    """Answers with feedback."""

    def __post_init__(self) -> None:
        """Refuses counts that cannot be."""
        if self.trials < 0 or not 0 <= self.successes <= self.trials:
            raise ValueError(f"need 0 <= successes <= trials, got {self.successes}/{self.trials}")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the rule says about a rollout now."""

    action: str | None
    """``promote``, ``abort`` or None (keep going)."""
    reason: str
    evidence: dict[str, float]
    """Both rates and counts, the difference, both log mixture ratios and the threshold."""


def log_threshold(confidence: float) -> float:
    """log(2 / alpha): each one-sided side decides once its log mixture ratio reaches this."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return math.log(2.0 / (1.0 - confidence))


def _log_half_normal_mixture(score: FloatArray, information: FloatArray) -> FloatArray:
    """Log of the likelihood ratio of a Gaussian mean, mixed over a half-normal(TAU) prior.

    With ``score`` S = (effect estimate) * I and ``information`` I = 1 / variance:
    integral over theta > 0 of exp(theta S - theta^2 I / 2), weighted 2 phi(theta / tau) / tau, is
    2 Phi(x) exp(x^2 / 2) / sqrt(1 + I tau^2), x = S tau / sqrt(1 + I tau^2).
    For S <= 0 the ratio is at most its value at S = 0 (by Mills' ratio), which is returned
    instead: below 1, it can never decide, and Phi is never computed far in its tail.
    """
    shrink = 1.0 + information * TAU**2
    x = np.maximum(score, 0.0) * TAU / np.sqrt(shrink)
    # erfc(x / sqrt 2) is 1 at x = 0 and under 1e-15 beyond x = 8: only the rest is computed.
    tail = np.where(x > 0.0, 0.0, 1.0)
    inner = (x > 0.0) & (x < 8.0)
    tail[inner] = np.asarray(_ERFC(x[inner] / math.sqrt(2.0)), dtype=np.float64)
    phi = 1.0 - 0.5 * tail
    return np.log(2.0 * phi) + 0.5 * x**2 - 0.5 * np.log(shrink)


def _null_variance(
    s_a: FloatArray, n_a: FloatArray, s_c: FloatArray, n_c: FloatArray, theta_0: float
) -> FloatArray:
    """Variance of p_c - p_a were the difference exactly theta_0 (the null's edge).

    Both rates are taken at the null, around the pooled rate: p_a = p - theta_0 n_c / n and
    p_c = p + theta_0 n_a / n, with p = (s_a + s_c + 1) / (n + 2), n = n_a + n_c (smoothed so
    that arms with no failure yet still vary), each kept within [1 / (n_arm + 2), 1 - that].
    The variance under the null, not the observed rates' (the score test's choice), keeps
    the approximation honest early on: an arm that has had 30 successes out of 30 would otherwise
    look certain, and at 0.95 vs 0.95 with a 10% canary 8.2% of simulated runs decided wrongly,
    against 3.8% this way.
    """
    n = n_a + n_c
    pooled = (s_a + s_c + 1.0) / (n + 2.0)
    floor_a, floor_c = 1.0 / (n_a + 2.0), 1.0 / (n_c + 2.0)
    p_a = np.clip(pooled - theta_0 * n_c / n, floor_a, 1.0 - floor_a)
    p_c = np.clip(pooled + theta_0 * n_a / n, floor_c, 1.0 - floor_c)
    return p_a * (1.0 - p_a) / n_a + p_c * (1.0 - p_c) / n_c


def log_evidence(
    active_successes: npt.ArrayLike,
    active_trials: npt.ArrayLike,
    candidate_successes: npt.ArrayLike,
    candidate_trials: npt.ArrayLike,
    abort_margin: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The two one-sided statistics, elementwise over counts (numbers or numpy arrays).

    Returns (difference, log promote ratio, log abort ratio): the promote side tests
    theta <= 0, the abort side theta >= -abort_margin, each with the variance at its null's
    edge. Trials must be positive.
    """
    s_a = np.asarray(active_successes, dtype=np.float64)
    n_a = np.asarray(active_trials, dtype=np.float64)
    s_c = np.asarray(candidate_successes, dtype=np.float64)
    n_c = np.asarray(candidate_trials, dtype=np.float64)
    difference = s_c / n_c - s_a / n_a
    information = 1.0 / _null_variance(s_a, n_a, s_c, n_c, 0.0)
    log_promote = _log_half_normal_mixture(difference * information, information)
    information = 1.0 / _null_variance(s_a, n_a, s_c, n_c, -abort_margin)
    log_abort = _log_half_normal_mixture(-(difference + abort_margin) * information, information)
    return difference, log_promote, log_abort


def decide(
    active: ArmCounts,
    candidate: ArmCounts,
    confidence: float,
    abort_margin: float,
    min_feedback: int,
) -> Verdict:
    """Promote, abort or keep going, from the feedback so far; valid when asked after every answer.

    Args:
        active: feedback on the active version's answers during the rollout.
        candidate: feedback on the candidate's answers.
        confidence: 1 - alpha, alpha being the chance of any wrong decision over the whole
            rollout, shared equally by a wrong promotion and a wrong abort.
        abort_margin: abort only once the candidate is worse by more than this (in rate points,
            0.02 = 2 points); 0 aborts once it is worse at all.
        min_feedback: answers with feedback each arm needs before anything is decided.

    Returns:
        The verdict, with the evidence it rests on.
    """
    threshold = log_threshold(confidence)
    if abort_margin < 0.0 or not math.isfinite(abort_margin):
        raise ValueError(f"abort_margin must be >= 0, got {abort_margin}")
    evidence = {
        "active_successes": float(active.successes),
        "active_trials": float(active.trials),
        "candidate_successes": float(candidate.successes),
        "candidate_trials": float(candidate.trials),
        "log_threshold": threshold,
    }
    needed = max(min_feedback, 1)
    if active.trials < needed or candidate.trials < needed:
        return Verdict(
            None,
            f"waiting for {needed} answers with feedback on each arm "
            f"(active {active.trials}, candidate {candidate.trials})",
            evidence,
        )
    difference, log_promote, log_abort = (
        float(v)
        for v in log_evidence(
            active.successes, active.trials, candidate.successes, candidate.trials, abort_margin
        )
    )
    evidence |= {
        "active_rate": active.successes / active.trials,
        "candidate_rate": candidate.successes / candidate.trials,
        "difference": difference,
        "log_promote_ratio": log_promote,
        "log_abort_ratio": log_abort,
    }
    points = f"{difference * 100:+.1f} points"
    if log_promote >= threshold:
        return Verdict(
            PROMOTE,
            f"candidate better ({points}) with confidence {confidence:g}: "
            f"log mixture ratio {log_promote:.2f} >= {threshold:.2f}",
            evidence,
        )
    if log_abort >= threshold:
        return Verdict(
            ABORT,
            f"candidate worse by more than {abort_margin * 100:g} points ({points}) with "
            f"confidence {confidence:g}: log mixture ratio {log_abort:.2f} >= {threshold:.2f}",
            evidence,
        )
    return Verdict(
        None,
        f"undecided ({points}): log mixture ratios {log_promote:.2f} (promote) and "
        f"{log_abort:.2f} (abort) below {threshold:.2f}",
        evidence,
    )
