"""Banking77, full training set, transfer from the pretrained encoder through the service.

One TrainAgent(training_type=TRANSFER) call with all 10,003 training examples (its defaults),
timed from the call to the final event (limit: config.max_duration_seconds = 900), then test.csv
scored through InvokeAgent. The reference, measured in the same run: frozen all-MiniLM-L6-v2
embeddings + scikit-learn LogisticRegression on the same training set (the brief gives 93.0%);
published fine-tuned BERT-base: 93.7%. Takes about 3 minutes on 2 cores. Writes
bench/results/transfer_full.json.
Usage: python bench/transfer_full.py [--data ../shared/data/banking77]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, accuracy_of, read_split, start_service
from few_shot import frozen_embeddings_lr


def main() -> None:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    train = read_split(args.data / "train.csv")
    test = read_split(args.data / "test.csv")
    examples = [
        training_pb2.TrainingExample(input=t, expected_output=y)
        for t, y in zip(*train, strict=True)
    ]
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=600) as client:
                client.create_agent(agent_id="transfer-full")
                started = time.perf_counter()
                events = list(
                    client.train_agent(
                        agent_id="transfer-full",
                        training_data=examples,
                        training_type=training_pb2.TRAINING_TYPE_TRANSFER,
                        config=training_pb2.TrainingConfig(max_duration_seconds=900),
                    )
                )
                seconds = time.perf_counter() - started
                final = events[-1].finished
                if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
                    raise RuntimeError(f"training failed: {final.error}")
                predicted = []
                for start in range(0, len(test[0]), 500):
                    response = client.invoke_agent(
                        agent_id="transfer-full", inputs=test[0][start : start + 500]
                    )
                    predicted += [p.output for p in response.predictions]
        finally:
            process.terminate()
            process.wait(30)
    result = {
        "accuracy": accuracy_of(predicted, test[1]),
        "train_seconds": seconds,
        "epochs_run": final.metrics.epochs_run,
        "validation_accuracy": final.metrics.validation_accuracy,
        "reference": frozen_embeddings_lr(train, test),
    }
    print(f"{args.data.name} transfer, full training set ({len(examples)}), {os.cpu_count()} cores")
    print(f"{'system':<56} {'test accuracy':>13} {'train s':>8}")
    print(
        f"{'agent-training transfer (MiniLM fine-tuned + n-grams)':<56}"
        f" {result['accuracy']:>13.4f} {seconds:>8.0f}"
    )
    reference = result["reference"]
    print(
        f"{'reference: frozen MiniLM embeddings + LogisticRegression':<56}"
        f" {reference['accuracy']:>13.4f} {reference['train_seconds']:>8.0f}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "transfer_full.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
