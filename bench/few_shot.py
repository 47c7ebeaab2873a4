"""Banking77 with 10 examples per intent: the few_shot paradigm against frozen embeddings + LR.

A fixed-seed sample of 10 training examples per intent (770 in all) trains
1. the service's few_shot paradigm (one TrainAgent call, timed to the final event; test.csv
   scored through InvokeAgent), and
2. the reference: frozen all-MiniLM-L6-v2 embeddings + scikit-learn LogisticRegression, timed
   from raw text (loading the model and encoding included) to the fitted model.
Both are scored on the full test.csv. Prints one table; writes bench/results/few_shot.json.
Usage: python bench/few_shot.py [--data ../shared/data/banking77] [--per-intent 10]
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


def sample(train: tuple[list[str], list[str]], per_intent: int, seed: int = 0):
    by_intent: dict[str, list[str]] = {}
    for text, label in zip(*train, strict=True):
        by_intent.setdefault(label, []).append(text)
    rng = random.Random(seed)
    texts, labels = [], []
    for label in sorted(by_intent):
        for text in rng.sample(by_intent[label], per_intent):
            texts.append(text)
            labels.append(label)
    return texts, labels


def frozen_embeddings_lr(shots, test) -> dict[str, float]:
    import torch
    from sklearn.linear_model import LogisticRegression

    from agent_training_server.engines.pretrained import SentenceEncoder

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()  # from raw text: loading the model counts, as in a job
    encoder = SentenceEncoder()
    features = encoder.embed(shots[0]).numpy()
    model = LogisticRegression(max_iter=2000, C=10.0).fit(features, shots[1])
    seconds = time.perf_counter() - started
    predicted = model.predict(encoder.embed(test[0]).numpy())
    return {"accuracy": accuracy_of(list(predicted), test[1]), "train_seconds": seconds}


def through_service(shots, test) -> dict[str, float]:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    examples = [
        training_pb2.TrainingExample(input=text, expected_output=label)
        for text, label in zip(*shots, strict=True)
    ]
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=300) as client:
                client.create_agent(agent_id="few-shot")
                started = time.perf_counter()
                events = list(
                    client.train_agent(
                        agent_id="few-shot",
                        training_data=examples,
                        training_type=training_pb2.TRAINING_TYPE_FEW_SHOT,
                    )
                )
                seconds = time.perf_counter() - started
                final = events[-1].finished
                if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
                    raise RuntimeError(f"training failed: {final.error}")
                predicted = []
                for start in range(0, len(test[0]), 500):
                    response = client.invoke_agent(
                        agent_id="few-shot", inputs=test[0][start : start + 500]
                    )
                    predicted += [p.output for p in response.predictions]
        finally:
            process.terminate()
            process.wait(30)
    return {"accuracy": accuracy_of(predicted, test[1]), "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-intent", type=int, default=10)
    args = parser.parse_args()
    shots = sample(read_split(args.data / "train.csv"), args.per_intent)
    test = read_split(args.data / "test.csv")
    results = {
        "reference": frozen_embeddings_lr(shots, test),
        "service": through_service(shots, test),
    }
    print(
        f"{args.data.name} few-shot: {args.per_intent} examples per intent ({len(shots[0])}),"
        f" {len(test[0])} test examples, {os.cpu_count()} cores"
    )
    print(f"{'system':<52} {'test accuracy':>13} {'train s':>8}")
    names = {
        "service": "agent-training few_shot (fine-tuned MiniLM, service)",
        "reference": "frozen all-MiniLM-L6-v2 embeddings + LogisticRegression",
    }
    for key in ("service", "reference"):
        row = results[key]
        print(f"{names[key]:<52} {row['accuracy']:>13.4f} {row['train_seconds']:>8.1f}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "few_shot.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
