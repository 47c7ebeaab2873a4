"""Rollouts on Banking77: a better candidate is promoted and a worse one aborted, by feedback.

1. Starts the service (a fresh data folder, no metrics listener) and trains one supervised agent
   twice: a "full" version on the whole of train.csv, and a "degraded" one on train.csv without
   every example of DROPPED intents (4 of 77: about 5% of test.csv, which it cannot answer).
   Both versions score test.csv through InvokeAgent with their version_id (outside any
   rollout); their difference is the gap the rollouts have to find.
2. Two scenarios, ``--runs`` seeded runs each: "better" (the degraded version active, the full
   one the candidate, which should be promoted) and "worse" (the reverse, which should be
   aborted). Each run activates the scenario's active version and starts a canary rollout
   (traffic share 0.5, policy: confidence 0.95, abort margin 0, 30 answers with feedback per arm
   before any decision). Then simulated customers, one per answer, each draw a test.csv example
   (a seeded numpy Generator), ask through InvokeAgent with their own assignment key, and send
   RecordFeedback as the closed-loop benchmark's customers do ("correct" when the answer is the
   true intent, else "incorrect"), until the policy decides or ``--horizon`` answers (undecided;
   the rollout is then aborted by hand).
3. The policy decides inside RecordFeedback, before it returns, so the next InvokeAgent's empty
   ``rollout_arm`` says that the rollout has ended (that answer is outside it and not counted);
   GetRollout is read once per run, at its end.

What a candidate's answers cost: for each one, whether the active version answers that input
right minus whether the candidate did, summed over the run ("successes lost"; negative: gained).
The active version's answer is its answer to the same test example, scored once in step 1
(answers are deterministic; every live answer is checked against its version's scored one and
any difference is counted as ``mismatches``).
Prints one table; writes bench/results/rollout.json.
Usage: python bench/rollout.py [--runs 20] [--horizon 8000] [--data ../shared/data/banking77]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from banking77 import DEFAULT_DATA, REPO, accuracy_of, read_split, start_service

DROPPED = 4
"""Intents (the first in name order) left out of the degraded version's training data."""
SHARE = 0.5
CONFIDENCE = 0.95
ABORT_MARGIN = 0.0
MIN_FEEDBACK = 30
AGENT = "rollout"
# scenario -> (active, candidate, the right decision)
SCENARIOS = {"better": ("degraded", "full", "promote"), "worse": ("full", "degraded", "abort")}
Split = tuple[list[str], list[str]]


def train_version(client, examples: Split) -> str:
    from agent_training.v1 import training_pb2

    data = [
        training_pb2.TrainingExample(input=text, expected_output=label)
        for text, label in zip(*examples, strict=True)
    ]
    events = list(client.train_agent(agent_id=AGENT, training_data=data))
    final = events[-1].finished
    if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
        raise RuntimeError(f"training failed: {final.error}")
    return final.version_id


def answers_of(client, version_id: str, texts: list[str]) -> list[str]:
    """A version's answers to ``texts``, named by version_id (outside any rollout)."""
    outputs: list[str] = []
    for begin in range(0, len(texts), 1000):
        response = client.invoke_agent(
            agent_id=AGENT, inputs=texts[begin : begin + 1000], version_id=version_id
        )
        outputs += [prediction.output for prediction in response.predictions]
    return outputs


def one_run(
    client,
    scenario: str,
    seed: int,
    horizon: int,
    *,
    versions: dict[str, str],
    right: dict[str, np.ndarray],
    answers: dict[str, list[str]],
    test: Split,
) -> dict[str, Any]:
    """One seeded rollout of the scenario's candidate; what was decided, after how many answers."""
    from agent_training.v1 import rollouts_pb2

    active, candidate, expected = SCENARIOS[scenario]
    client.activate_agent_version(AGENT, versions[active])  # a promotion changed it
    started = time.perf_counter()
    rollout_id = client.start_rollout(
        agent_id=AGENT,
        candidate_version_id=versions[candidate],
        mode=rollouts_pb2.ROLLOUT_MODE_CANARY,
        traffic_share=SHARE,
        policy=rollouts_pb2.RolloutPolicy(
            confidence=CONFIDENCE, abort_margin=ABORT_MARGIN, min_feedback=MIN_FEEDBACK
        ),
    ).rollout_id
    texts, truths = test
    drawn = np.random.default_rng(seed).integers(len(texts), size=horizon)
    by_arm = {"active": 0, "candidate": 0}
    to_candidate: list[bool] = []  # per answer with feedback: its arm, whether it was right
    successes: list[bool] = []
    lost = 0
    mismatches = 0
    for number, index in enumerate(drawn.tolist()):
        response = client.invoke_agent(
            agent_id=AGENT,
            input=texts[index],
            assignment_key=f"{scenario}-run{seed}-customer{number}",
        )
        if not response.rollout_arm:  # the previous feedback ended the rollout
            break
        arm = response.rollout_arm
        version = active if arm == "active" else candidate
        answer = response.predictions[0]
        mismatches += answer.output != answers[version][index]
        by_arm[arm] += 1
        if arm == "candidate":
            lost += int(right[active][index]) - int(right[candidate][index])
        success = answer.output == truths[index]
        to_candidate.append(arm == "candidate")
        successes.append(success)
        client.record_feedback(
            agent_id=AGENT,
            invocation_id=answer.invocation_id,
            feedback="correct" if success else "incorrect",
        )
    rollout = client.get_rollout(AGENT, rollout_id)
    if rollout.state == rollouts_pb2.ROLLOUT_STATE_RUNNING:
        client.abort_rollout(AGENT, reason=f"benchmark horizon of {horizon} answers")
        decision = "none"
        evidence: dict[str, float] = {}
    else:
        (made,) = rollout.decisions
        decision = made.action
        evidence = dict(made.evidence)
    return {
        "seed": seed,
        "decision": decision,
        "right": decision == expected,
        "wrong": decision not in (expected, "none"),
        "answers": by_arm["active"] + by_arm["candidate"],
        "active_answers": by_arm["active"],
        "candidate_answers": by_arm["candidate"],
        "successes_lost": lost,
        "mismatches": mismatches,
        # The decision's own counts of answers with feedback, which should be ours.
        "counts_agree": not evidence
        or (evidence["active_feedback"], evidence["candidate_feedback"])
        == (by_arm["active"], by_arm["candidate"]),
        "first_crossing": first_crossing(to_candidate, successes),
        "seconds": time.perf_counter() - started,
        "evidence": evidence,
    }


def first_crossing(to_candidate: list[bool], successes: list[bool]) -> int | None:
    """The answer (from 1) after which the policy's test first decides, replayed here; or None.

    The test is rollouts/decisions.py on our own record of the run's feedback: the service
    should have decided after exactly this answer.
    """
    from agent_training_server.rollouts import decisions

    arm = np.array(to_candidate, dtype=bool)
    won = np.array(successes, dtype=bool)
    n_c = np.cumsum(arm)
    n_a = np.arange(1, len(arm) + 1) - n_c
    s_c, s_a = np.cumsum(won & arm), np.cumsum(won & ~arm)
    with np.errstate(divide="ignore", invalid="ignore"):
        _, log_promote, log_abort = decisions.log_evidence(
            s_a, np.maximum(n_a, 1), s_c, np.maximum(n_c, 1), ABORT_MARGIN
        )
    ready = (n_a >= MIN_FEEDBACK) & (n_c >= MIN_FEEDBACK)
    crossed = ready & (np.maximum(log_promote, log_abort) >= decisions.log_threshold(CONFIDENCE))
    return int(crossed.argmax()) + 1 if crossed.any() else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    decided = [run for run in runs if run["decision"] != "none"]
    to_decision = [run["answers"] for run in decided]
    candidate = [run["candidate_answers"] for run in runs]
    lost = [run["successes_lost"] for run in runs]
    return {
        "runs": len(runs),
        "right": sum(run["right"] for run in runs),
        "wrong": sum(run["wrong"] for run in runs),
        "undecided": len(runs) - len(decided),
        "answers_to_decision_median": float(np.median(to_decision)) if decided else None,
        "answers_to_decision_p90": float(np.percentile(to_decision, 90)) if decided else None,
        "candidate_answers_mean": float(np.mean(candidate)),
        "candidate_answers_max": int(max(candidate)),
        "successes_lost_mean": float(np.mean(lost)),
        "successes_lost_max": int(max(lost)),
        "successes_lost_total": int(sum(lost)),
        "mismatches": sum(run["mismatches"] for run in runs),
        "counts_disagree": sum(not run["counts_agree"] for run in runs),
        # Decided (or not) exactly where the test, replayed on the customers' feedback, says.
        "at_first_crossing": sum(
            run["first_crossing"] == (run["answers"] if run["decision"] != "none" else None)
            for run in runs
        ),
    }


def main() -> None:
    from agent_training_client import AgentTrainingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="seeded runs per scenario")
    parser.add_argument("--horizon", type=int, default=8000, help="most answers per run")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    train = read_split(args.data / "train.csv")
    test = read_split(args.data / "test.csv")
    dropped = sorted(set(train[1]))[:DROPPED]
    kept = [(t, label) for t, label in zip(*train, strict=True) if label not in dropped]
    degraded_train: Split = ([t for t, _ in kept], [label for _, label in kept])
    load_before = os.getloadavg()[0]
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir), "--metrics-address", "")
        try:
            with AgentTrainingClient(address, timeout=120) as client:
                client.create_agent(agent_id=AGENT)
                versions = {"full": train_version(client, train)}
                versions["degraded"] = train_version(client, degraded_train)
                answers = {name: answers_of(client, v, test[0]) for name, v in versions.items()}
                right = {
                    name: np.array([a == y for a, y in zip(outputs, test[1], strict=True)])
                    for name, outputs in answers.items()
                }
                run = functools.partial(
                    one_run, client, versions=versions, right=right, answers=answers, test=test
                )
                runs = {
                    scenario: [run(scenario, seed, args.horizon) for seed in range(args.runs)]
                    for scenario in SCENARIOS
                }
        finally:
            process.terminate()
            process.wait(30)

    accuracy = {name: accuracy_of(outputs, test[1]) for name, outputs in answers.items()}
    gap = accuracy["full"] - accuracy["degraded"]
    dropped_share = sum(label in dropped for label in test[1]) / len(test[1])
    results: dict[str, Any] = {
        "accuracy": accuracy,
        "gap_points": 100 * gap,
        "dropped_intents": dropped,
        "dropped_test_share": dropped_share,
        "policy": {
            "traffic_share": SHARE,
            "confidence": CONFIDENCE,
            "abort_margin": ABORT_MARGIN,
            "min_feedback": MIN_FEEDBACK,
        },
        "horizon": args.horizon,
        "summary": {scenario: summarise(rows) for scenario, rows in runs.items()},
        "runs": runs,
        "seconds": time.perf_counter() - started,
        "load_average": [load_before, os.getloadavg()[0]],
        "cores": os.cpu_count(),
    }
    print(
        f"{args.data.name}: full version {accuracy['full']:.2%}, degraded (without {DROPPED}"
        f" intents, {dropped_share:.1%} of test) {accuracy['degraded']:.2%}, gap"
        f" {100 * gap:.2f} points; canary {SHARE:.0%}, confidence {CONFIDENCE}, horizon"
        f" {args.horizon}; {os.cpu_count()} cores, load {load_before:.2f} ->"
        f" {results['load_average'][1]:.2f}, {results['seconds']:.0f} s"
    )
    print(
        f"{'scenario':<28} {'runs':>4} {'right':>5} {'wrong':>5} {'undecided':>9}"
        f" {'answers to decision (median, p90)':>34} {'candidate answers (mean, max)':>30}"
        f" {'successes lost (mean, max)':>27}"
    )
    titles = {"better": "better (promote expected)", "worse": "worse (abort expected)"}
    for scenario, row in results["summary"].items():
        to_decision = (
            f"{row['answers_to_decision_median']:,.0f}, {row['answers_to_decision_p90']:,.0f}"
            if row["answers_to_decision_median"] is not None
            else "-"
        )
        candidate = f"{row['candidate_answers_mean']:,.0f}, {row['candidate_answers_max']:,}"
        lost = f"{row['successes_lost_mean']:.1f}, {row['successes_lost_max']}"
        print(
            f"{titles[scenario]:<28} {row['runs']:>4} {row['right']:>5} {row['wrong']:>5}"
            f" {row['undecided']:>9} {to_decision:>34} {candidate:>30} {lost:>27}"
        )
    mismatches = sum(row["mismatches"] for row in results["summary"].values())
    disagree = sum(row["counts_disagree"] for row in results["summary"].values())
    first = sum(row["at_first_crossing"] for row in results["summary"].values())
    print(
        f"live answers that differed from their version's scored answer: {mismatches};"
        f" decisions whose feedback counts differ from the customers': {disagree}; runs that"
        f" stopped where the test replayed on their feedback first decides: {first}/"
        f"{2 * args.runs}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "rollout.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
