"""Closing the loop on Banking77: answers, simulated feedback and adaptation, round by round.

1. A supervised agent trained through the service on 10 examples per intent (770), with an
   exploration rate of 0.2 so its answers teach it something.
2. Each round, it answers 2,000 fresh train.csv queries through InvokeAgent; a simulated user
   sends RecordFeedback from the true intent ("correct" or "incorrect"); then
   AdaptAgentBehavior(strategy=REINFORCEMENT) runs. Test accuracy (top answers, test.csv, through
   AnalyzeAndOptimize) is printed per round.
3. The threshold strategy alone on the same start: one round of answers with feedback, then
   AdaptAgentBehavior(THRESHOLD) with a target success rate on answered queries, then the
   measured success rate of answered test queries.
Writes bench/results/closed_loop.json.
Usage: python bench/closed_loop.py [--rounds 4] [--per-round 2000] [--target 0.95]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, read_split, start_service
from few_shot import sample


def main() -> None:
    from agent_training.v1 import adaptation_pb2, agents_pb2, training_pb2
    from agent_training_client import AgentTrainingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=2000)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()
    train = read_split(DEFAULT_DATA / "train.csv")
    test = read_split(DEFAULT_DATA / "test.csv")
    shots = sample(train, 10)
    evaluation = [
        training_pb2.TrainingExample(input=t, expected_output=label)
        for t, label in zip(*test, strict=True)
    ]
    stream = list(zip(*train, strict=True))
    random.Random(0).shuffle(stream)

    def start(client, agent_id: str) -> None:
        client.create_agent(
            agent_id=agent_id,
            default_behavior=agents_pb2.BehaviorSettings(exploration_rate=0.2),
        )
        examples = [
            training_pb2.TrainingExample(input=t, expected_output=label)
            for t, label in zip(*shots, strict=True)
        ]
        events = list(client.train_agent(agent_id=agent_id, training_data=examples))
        if events[-1].finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
            raise RuntimeError(f"training failed: {events[-1].finished.error}")

    def accuracy(client, agent_id: str) -> tuple[float, float, float]:
        analysis = client.analyze_and_optimize(
            agent_id=agent_id, evaluation_data=evaluation
        ).analysis
        return analysis.accuracy, analysis.accuracy_when_answered, analysis.coverage

    def answer_round(client, agent_id: str, chunk) -> float:
        """The agent answers `chunk`; the simulated user sends feedback; the rewarded share."""
        rewarded = 0
        for begin in range(0, len(chunk), 500):
            batch = chunk[begin : begin + 500]
            answers = client.invoke_agent(
                agent_id=agent_id, inputs=[text for text, _ in batch]
            ).predictions
            for answer, (_text, truth) in zip(answers, batch, strict=True):
                right = answer.output == truth
                rewarded += right
                client.record_feedback(
                    agent_id=agent_id,
                    invocation_id=answer.invocation_id,
                    feedback="correct" if right else "incorrect",
                )
        return rewarded / len(chunk)

    rounds = []
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=600) as client:
                start(client, "looped")
                rounds.append({"round": 0, "accuracy": accuracy(client, "looped")[0]})
                looped_answered = 0.0
                for number in range(1, args.rounds + 1):
                    chunk = stream[(number - 1) * args.per_round : number * args.per_round]
                    rewarded = answer_round(client, "looped", chunk)
                    adapted = client.adapt_agent_behavior(
                        agent_id="looped",
                        performance_metrics={"success_rate": rewarded},
                        adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_REINFORCEMENT,
                    )
                    rounds.append(
                        {
                            "round": number,
                            "accuracy": accuracy(client, "looped")[0],
                            "answers_rewarded": rewarded,
                            "accepted": bool(adapted.changes),
                            "summary": adapted.summary,
                        }
                    )
                _, looped_answered, _ = accuracy(client, "looped")
                start(client, "thresholded")
                rewarded = answer_round(client, "thresholded", stream[: args.per_round])
                client.adapt_agent_behavior(
                    agent_id="thresholded",
                    performance_metrics={"success_rate": rewarded},
                    adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD,
                    targets={"success_rate": args.target},
                )
                _, answered_success, coverage = accuracy(client, "thresholded")
        finally:
            process.terminate()
            process.wait(30)
    results = {
        "rounds": rounds,
        "loop_answered_success_rate": looped_answered,
        "threshold": {
            "target": args.target,
            "answered_success_rate": answered_success,
            "coverage": coverage,
        },
    }
    print(f"Banking77 closed loop, {args.per_round} answers per round, {os.cpu_count()} cores")
    print(f"{'round':>5} {'test accuracy':>14} {'answers rewarded':>17}  adaptation")
    for row in rounds:
        rewarded = f"{row['answers_rewarded']:.1%}" if "answers_rewarded" in row else ""
        print(
            f"{row['round']:>5} {row['accuracy']:>14.2%} {rewarded:>17}  {row.get('summary', '')}"
        )
    print(f"after the loop: answered test queries {looped_answered:.2%} right (all answered)")
    print(
        f"threshold strategy alone, target {args.target:.0%}: answered test queries"
        f" {answered_success:.2%} right, {coverage:.1%} answered"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "closed_loop.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
