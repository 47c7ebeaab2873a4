"""Banking77 bandit simulation: learning from logged feedback only, against its references.

1. A logging policy: a supervised agent trained through the service on a 5% sample of train.csv.
2. It answers each remaining training query once, epsilon-greedy among its top 4 outputs
   (epsilon 0.2), and the log records its answer, the propensity of that answer and the reward:
   +1 when the answer is the true intent, else -1. No labels are used after this point.
3. From the log alone, through the service:
   - reinforcement: TrainAgent(training_type=REINFORCEMENT) on every interaction, starting
     from the logging policy's version (the agent's active one);
   - reference: the same start taught only the positively rewarded interactions
     (cross-entropy on them, i.e. supervised training on the positives from the same start).
All are scored on test.csv through InvokeAgent. Prints one table; writes
bench/results/reinforcement.json. Usage: python bench/reinforcement.py [--data ...]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, accuracy_of, read_split, start_service

EPSILON = 0.2
TOP = 4


def score(client, agent_id: str, test) -> float:
    predicted = []
    for start in range(0, len(test[0]), 1000):
        response = client.invoke_agent(agent_id=agent_id, inputs=test[0][start : start + 1000])
        predicted += [p.output for p in response.predictions]
    return accuracy_of(predicted, test[1])


def simulate_log(client, agent_id: str, queries, rng: random.Random):
    """The logging policy answers each query once; returns the interactions it logs."""
    from agent_training.v1 import training_pb2

    log = []
    for start in range(0, len(queries[0]), 1000):
        texts = queries[0][start : start + 1000]
        response = client.invoke_agent(agent_id=agent_id, inputs=texts)
        for prediction, truth in zip(response.predictions, queries[1][start:], strict=False):
            others = [a.output for a in prediction.alternatives][: TOP - 1]
            if others and rng.random() < EPSILON:
                answer, propensity = rng.choice(others), EPSILON / len(others)
            else:
                answer, propensity = prediction.output, 1.0 - (EPSILON if others else 0.0)
            log.append(
                training_pb2.TrainingExample(
                    input=prediction.input,
                    expected_output=answer,
                    propensity=propensity,
                    feedback="correct" if answer == truth else "incorrect",
                )
            )
    return log


def train(client, agent_id: str, examples, **fields) -> tuple[float, object]:
    from agent_training.v1 import training_pb2

    started = time.perf_counter()
    events = list(client.train_agent(agent_id=agent_id, training_data=examples, **fields))
    seconds = time.perf_counter() - started
    final = events[-1].finished
    if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
        raise RuntimeError(f"training failed: {final.error}")
    return seconds, final


def main() -> None:
    from agent_training.v1 import agents_pb2, training_pb2
    from agent_training_client import AgentTrainingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    texts, labels = read_split(args.data / "train.csv")
    test = read_split(args.data / "test.csv")
    rng = random.Random(0)
    order = list(range(len(texts)))
    rng.shuffle(order)
    cut = len(order) // 20
    seed_rows, log_rows = order[:cut], order[cut:]
    seed = [
        training_pb2.TrainingExample(input=texts[i], expected_output=labels[i]) for i in seed_rows
    ]
    queries = ([texts[i] for i in log_rows], [labels[i] for i in log_rows])

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=300) as client:
                for agent_id in ("policy", "positives"):
                    client.create_agent(
                        agent_id=agent_id,
                        default_behavior=agents_pb2.BehaviorSettings(num_alternatives=TOP - 1),
                    )
                    train(client, agent_id, seed, config=training_pb2.TrainingConfig(epochs=30))
                results["logging_policy"] = {"accuracy": score(client, "policy", test)}
                log = simulate_log(client, "policy", queries, rng)
                rewarded = [e for e in log if e.feedback == "correct"]
                seconds, final = train(
                    client, "policy", log, training_type=training_pb2.TRAINING_TYPE_REINFORCEMENT
                )
                results["reinforcement"] = {
                    "accuracy": score(client, "policy", test),
                    "train_seconds": seconds,
                    "policy_value_estimate": final.metrics.policy_value,
                }
                seconds, _ = train(
                    client,
                    "positives",
                    rewarded,
                    training_type=training_pb2.TRAINING_TYPE_REINFORCEMENT,
                )
                results["positives_only"] = {
                    "accuracy": score(client, "positives", test),
                    "train_seconds": seconds,
                }
        finally:
            process.terminate()
            process.wait(30)
    print(
        f"Banking77 bandit simulation: {len(seed)} labelled seed examples, {len(log)} logged"
        f" interactions ({len(rewarded) / len(log):.1%} rewarded), epsilon {EPSILON} among top"
        f" {TOP}, {os.cpu_count()} cores"
    )
    print(f"{'policy':<58} {'test accuracy':>13} {'train s':>8}")
    names = {
        "reinforcement": "reinforcement on the whole log (from the logging policy)",
        "positives_only": "positive interactions only, same start (reference)",
        "logging_policy": "logging policy (supervised on the 5% seed)",
    }
    for key in ("reinforcement", "positives_only", "logging_policy"):
        row = results[key]
        seconds = f"{row['train_seconds']:>8.1f}" if "train_seconds" in row else f"{'':>8}"
        print(f"{names[key]:<58} {row['accuracy']:>13.4f} {seconds}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "reinforcement.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
