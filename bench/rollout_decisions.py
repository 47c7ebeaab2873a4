"""Rollout decisions checked after every answer: wrong decisions and answers needed, simulated.

Each simulated rollout sends answers with feedback to the candidate with probability ``--share``
(else to the active version), up to ``--horizon`` answers in all, and asks for a decision after
every answer once both arms have ``--min-feedback``. Rules compared, all at alpha = 0.05:

* msprt: rollouts/decisions.py (one-sided mixture SPRTs on the difference, alpha / 2 each);
* cs: per-arm confidence sequences (Howard et al. 2021, normal-mixture boundary for
  1/4-sub-Gaussian observations, rho tuned for a few thousand answers), each bound at alpha / 4,
  union bound; decides when the candidate's interval clears the active one's;
* naive: a two-sided z-test at alpha repeated after every answer (what not to do);
* fixed: the same z-test once, at the horizon (reference for power).

"wrong" is the share of runs that ever promote when the candidate is not better, or ever abort
when it is not worse (margin 0). Prints one table.
Usage: python bench/rollout_decisions.py [--runs 300] [--horizon 10000] [--share 0.5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from agent_training_server.rollouts import decisions

ALPHA = 0.05
Z_TWO_SIDED = 1.959963984540054  # the 97.5% normal quantile


def simulate(rng, runs, horizon, share, p_active, p_candidate):
    """Cumulative counts after each answer, shape (runs, horizon)."""
    to_candidate = rng.random((runs, horizon)) < share
    success = rng.random((runs, horizon)) < np.where(to_candidate, p_candidate, p_active)
    n_c = np.cumsum(to_candidate, axis=1)
    n_a = np.arange(1, horizon + 1) - n_c
    s_c = np.cumsum(success & to_candidate, axis=1)
    s_a = np.cumsum(success & ~to_candidate, axis=1)
    return s_a, n_a, s_c, n_c


def first_true(mask):
    """Index of the first True per row, -1 where none."""
    hit = mask.any(axis=1)
    return np.where(hit, mask.argmax(axis=1), -1)


def msprt_rule(s_a, n_a, s_c, n_c, ready, margin):
    with np.errstate(divide="ignore", invalid="ignore"):
        _, log_p, log_q = decisions.log_evidence(
            s_a, np.maximum(n_a, 1), s_c, np.maximum(n_c, 1), margin
        )
    threshold = decisions.log_threshold(1 - ALPHA)
    return ready & (log_p >= threshold), ready & (log_q >= threshold)


def cs_radius(n, alpha, rho):
    """Howard et al. (2021) one-sided normal-mixture radius of the mean, variance proxy 1/4."""
    v = n / 4.0
    return np.sqrt(2 * (v + rho) * np.log(np.sqrt((v + rho) / rho) / alpha)) / np.maximum(n, 1)


def cs_rule(s_a, n_a, s_c, n_c, ready, margin, rho=100.0):
    with np.errstate(divide="ignore", invalid="ignore"):
        r_a, r_c = cs_radius(n_a, ALPHA / 4, rho), cs_radius(n_c, ALPHA / 4, rho)
        p_a, p_c = s_a / n_a, s_c / n_c
    promote = ready & (p_c - r_c > p_a + r_a)
    abort = ready & (p_c + r_c < p_a - r_a - margin)
    return promote, abort


def z_rule(s_a, n_a, s_c, n_c, ready, margin):
    with np.errstate(divide="ignore", invalid="ignore"):
        p_a, p_c = s_a / n_a, s_c / n_c
        se = np.sqrt(p_a * (1 - p_a) / n_a + p_c * (1 - p_c) / n_c)
        z = (p_c - p_a) / se
        z_abort = (p_c - p_a + margin) / se
    return ready & (z > Z_TWO_SIDED), ready & (z_abort < -Z_TWO_SIDED)


def fixed_rule(s_a, n_a, s_c, n_c, ready, margin):
    promote, abort = z_rule(s_a, n_a, s_c, n_c, ready, margin)
    only_last = np.zeros_like(promote)
    only_last[:, -1] = True
    return promote & only_last, abort & only_last


RULES = {"msprt": msprt_rule, "cs": cs_rule, "naive": z_rule, "fixed": fixed_rule}


def run_scenario(seed, args, p_active, p_candidate):
    rng = np.random.default_rng(seed)
    s_a, n_a, s_c, n_c = simulate(rng, args.runs, args.horizon, args.share, p_active, p_candidate)
    ready = (n_a >= args.min_feedback) & (n_c >= args.min_feedback)
    rows = {}
    for name, rule in RULES.items():
        promote, abort = rule(s_a, n_a, s_c, n_c, ready, 0.0)
        first_p, first_a = first_true(promote), first_true(abort)
        # The decision a rollout takes is the first one reached; it ends the rollout.
        never = np.iinfo(np.int64).max
        at_p = np.where(first_p >= 0, first_p, never)
        at_a = np.where(first_a >= 0, first_a, never)
        promoted, aborted = at_p < at_a, at_a < at_p
        rows[name] = (promoted, aborted, np.minimum(at_p, at_a), n_a, n_c)
    return rows


def describe(promoted, aborted, step, n_a, n_c, want):
    runs = len(promoted)
    decided = promoted if want == "promote" else aborted
    if want == "none":
        return f"{(promoted | aborted).mean():7.3f}", "-", "-"
    idx = np.nonzero(decided)[0]
    per_arm = np.minimum(n_a[idx, step[idx]], n_c[idx, step[idx]])
    wrong = (aborted if want == "promote" else promoted).sum()
    median = f"{np.median(per_arm):.0f}" if len(idx) else "-"
    p90 = f"{np.quantile(per_arm, 0.9):.0f}" if len(idx) else "-"
    return f"{len(idx) / runs:5.3f}/{wrong}", median, p90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--horizon", type=int, default=10_000, help="answers with feedback")
    parser.add_argument("--share", type=float, default=0.5, help="candidate's share")
    parser.add_argument("--min-feedback", type=int, default=30)
    parser.add_argument("--tau", type=float, default=decisions.TAU, help="mSPRT mixing scale")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    decisions.TAU = args.tau
    scenarios = [
        ("0.80 vs 0.80", 0.80, 0.80, "none"),
        ("0.95 vs 0.95", 0.95, 0.95, "none"),
        ("0.70 vs 0.70", 0.70, 0.70, "none"),
        ("0.80 -> 0.85", 0.80, 0.85, "promote"),
        ("0.80 -> 0.75", 0.80, 0.75, "abort"),
        ("0.70 -> 0.75", 0.70, 0.75, "promote"),
        ("0.85 -> 0.90", 0.85, 0.90, "promote"),
        ("0.90 -> 0.85", 0.90, 0.85, "abort"),
        ("0.80 -> 0.83", 0.80, 0.83, "promote"),
    ]
    print(
        f"{args.runs} runs, {args.horizon} answers, candidate share {args.share}, "
        f"min_feedback {args.min_feedback}, tau {args.tau}, alpha {ALPHA}, every answer checked"
    )
    print("H0 rows: share of runs with any decision (wrong). Other rows: share decided right/")
    print("number decided wrong; median and 90th percentile of the smaller arm's answers then.")
    header = f"{'scenario':14}" + "".join(f" | {n:>13} {'med':>5} {'p90':>5}" for n in RULES)
    print(header)
    print("-" * len(header))
    for i, (label, p_a, p_c, want) in enumerate(scenarios):
        rows = run_scenario(args.seed + i, args, p_a, p_c)
        cells = [describe(*rows[name], want) for name in RULES]
        print(f"{label:14}" + "".join(f" | {a:>13} {b:>5} {c:>5}" for a, b, c in cells))


if __name__ == "__main__":
    main()
