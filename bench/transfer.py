"""Banking77 transfer between agents: does agent A's encoder help agent B's new intents?

Agent A learns 40 intents (20 examples each, few_shot on the pretrained encoder). Agent B then
learns the other 37 intents from 10 examples each (fixed seed), three ways, through the service:
- transfer from agent A (config.base_agent_id: A's fine-tuned encoder, a new head);
- transfer from the pretrained encoder alone (no base agent);
- supervised from scratch (hashed n-grams, no pretrained weights).
Each is scored on the test examples of B's 37 intents. Prints one table; writes
bench/results/transfer.json. Usage: python bench/transfer.py [--data ../shared/data/banking77]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, accuracy_of, read_split, start_service
from few_shot import sample


def main() -> None:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    train = read_split(args.data / "train.csv")
    test = read_split(args.data / "test.csv")
    intents = sorted(set(train[1]))
    first, second = set(intents[:40]), set(intents[40:])

    def part(split, keep, per_intent):
        rows = [(t, y) for t, y in zip(*split, strict=True) if y in keep]
        texts, labels = [r[0] for r in rows], [r[1] for r in rows]
        return sample((texts, labels), per_intent) if per_intent else (texts, labels)

    def examples(split):
        return [
            training_pb2.TrainingExample(input=t, expected_output=y)
            for t, y in zip(*split, strict=True)
        ]

    a_data, b_data = part(train, first, 20), part(train, second, 10)
    b_test = part(test, second, 0)
    ways = {
        "from_agent_a": {
            "training_type": training_pb2.TRAINING_TYPE_TRANSFER,
            "config": training_pb2.TrainingConfig(base_agent_id="agent-a"),
        },
        "from_pretrained": {"training_type": training_pb2.TRAINING_TYPE_TRANSFER},
        "from_scratch": {"training_type": training_pb2.TRAINING_TYPE_SUPERVISED},
    }
    results = {}
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=300) as client:
                client.create_agent(agent_id="agent-a")
                list(
                    client.train_agent(
                        agent_id="agent-a",
                        training_data=examples(a_data),
                        training_type=training_pb2.TRAINING_TYPE_FEW_SHOT,
                    )
                )
                for way, fields in ways.items():
                    agent_id = f"agent-b-{way.replace('_', '-')}"
                    client.create_agent(agent_id=agent_id)
                    started = time.perf_counter()
                    events = list(
                        client.train_agent(
                            agent_id=agent_id, training_data=examples(b_data), **fields
                        )
                    )
                    seconds = time.perf_counter() - started
                    final = events[-1].finished
                    if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
                        raise RuntimeError(f"{way} failed: {final.error}")
                    predicted = []
                    for start in range(0, len(b_test[0]), 500):
                        response = client.invoke_agent(
                            agent_id=agent_id, inputs=b_test[0][start : start + 500]
                        )
                        predicted += [p.output for p in response.predictions]
                    results[way] = {
                        "accuracy": accuracy_of(predicted, b_test[1]),
                        "train_seconds": seconds,
                    }
        finally:
            process.terminate()
            process.wait(30)
    print(
        f"Banking77 transfer: agent A on 40 intents x 20, agent B on the other 37 x 10"
        f" ({len(b_test[0])} test examples of B's intents), {os.cpu_count()} cores"
    )
    print(f"{'agent B trained':<44} {'test accuracy':>13} {'train s':>8}")
    names = {
        "from_agent_a": "transfer from agent A",
        "from_pretrained": "transfer from the pretrained encoder",
        "from_scratch": "supervised from scratch (n-grams)",
    }
    for way, row in results.items():
        print(f"{names[way]:<44} {row['accuracy']:>13.4f} {row['train_seconds']:>8.1f}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
