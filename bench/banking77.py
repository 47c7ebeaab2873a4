"""Banking77 through the running service, against scikit-learn's TF-IDF + LinearSVC, in one run.

1. Starts the service (``agent-training serve``) on a free loopback port with a fresh data folder.
2. Trains on train.csv with one TrainAgent call carrying the data, timed from the call to the
   final event, then scores test.csv with InvokeAgent batches.
3. Fits TF-IDF (word 1-2 grams + char 2-5 grams, sublinear tf) + LinearSVC on the same split.
4. Trains the same engine in-process (no gRPC, no worker) to show what the service adds.

Each contender is timed ROUNDS times, interleaved, and the median is reported: the machine is
shared and noisy, so the comparison is the ratio of medians within one run. Prints one table and
writes bench/results/banking77.json. Usage:
    python bench/banking77.py [--data ../shared/data/banking77] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "banking77"


def read_split(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["category"] for row in rows]


def accuracy_of(predicted: list[str], expected: list[str]) -> float:
    return sum(p == y for p, y in zip(predicted, expected, strict=True)) / len(expected)


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median train time (its accuracy too: runs are deterministic)."""
    ordered = sorted(rounds, key=lambda row: row["train_seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["train_seconds_all"] = [round(row["train_seconds"], 3) for row in rounds]
    return chosen


def linear_svc(train, test) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    model = make_pipeline(
        FeatureUnion(
            [
                ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                (
                    "chars",
                    TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
                ),
            ]
        ),
        LinearSVC(),
    )
    model.fit(*train)
    seconds = time.perf_counter() - started
    accuracy = sum(p == y for p, y in zip(model.predict(test[0]), test[1], strict=True)) / len(
        test[1]
    )
    return {"accuracy": accuracy, "train_seconds": seconds}


def start_service(data_dir: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """`agent-training serve` on a free port with its data in ``data_dir`` (and ``flags``)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_training_client",
            "serve",
            "--address",
            "127.0.0.1:0",
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
            *flags,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    line = process.stdout.readline()
    match = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    return process, match.group(1)


def through_service(train, test, rounds: int) -> list[dict[str, float]]:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    examples = [
        training_pb2.TrainingExample(input=text, expected_output=label)
        for text, label in zip(*train, strict=True)
    ]
    results = []
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=120) as client:
                # A tiny job first: the workers finish importing torch, as in a running service.
                client.create_agent(agent_id="warmup")
                list(
                    client.train_agent(
                        agent_id="warmup",
                        training_data=examples[:200],
                        config=training_pb2.TrainingConfig(epochs=1),
                    )
                )
                for round_number in range(rounds):
                    agent_id = f"banking77-{round_number}"
                    client.create_agent(agent_id=agent_id)
                    started = time.perf_counter()
                    events = list(client.train_agent(agent_id=agent_id, training_data=examples))
                    seconds = time.perf_counter() - started
                    final = events[-1].finished
                    if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
                        raise RuntimeError(f"training failed: {final.error}")
                    predicted = []
                    for start in range(0, len(test[0]), 1000):
                        response = client.invoke_agent(
                            agent_id=agent_id, inputs=test[0][start : start + 1000]
                        )
                        predicted += [p.output for p in response.predictions]
                    results.append(
                        {
                            "accuracy": accuracy_of(predicted, test[1]),
                            "train_seconds": seconds,
                            "epochs_run": final.metrics.epochs_run,
                            "validation_accuracy": final.metrics.validation_accuracy,
                        }
                    )
        finally:
            process.terminate()
            process.wait(30)
    return results


class SilentReporter:
    """A training reporter that discards progress (in-process runs)."""

    def progress(self, update: object) -> None:
        """Discard the update."""

    def cancelled(self) -> bool:
        """Never cancelled."""
        return False


def in_process(train, test, rounds: int) -> list[dict[str, float]]:
    import torch

    from agent_training_server.engines import registry
    from agent_training_server.engines.base import Example, TrainSettings

    torch.set_num_threads(os.cpu_count() or 1)
    examples = [Example(text, label) for text, label in zip(*train, strict=True)]
    results = []
    for _round in range(rounds + 1):  # the first round pays torch's one-time imports: dropped
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            artifact = registry.get_engine("supervised").train(
                examples, TrainSettings(), SilentReporter(), Path(workdir)
            )
            seconds = time.perf_counter() - started
        predictor = registry.load_predictor(artifact.spec, artifact.tensors)
        best = predictor.predict_proba(test[0]).argmax(axis=1)
        accuracy = accuracy_of([artifact.outputs[i] for i in best], test[1])
        results.append({"accuracy": accuracy, "train_seconds": seconds})
    return results[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each contender")
    args = parser.parse_args()
    train = read_split(args.data / "train.csv")
    test = read_split(args.data / "test.csv")

    svc_rounds = [linear_svc(train, test) for _ in range(args.rounds)]
    results = {
        "linear_svc": median_of(svc_rounds),
        "service": median_of(through_service(train, test, args.rounds)),
        "in_process": median_of(in_process(train, test, args.rounds)),
    }
    svc = results["linear_svc"]
    print(
        f"Banking77: {len(train[0])} train / {len(test[0])} test examples,"
        f" {os.cpu_count()} cores, median of {args.rounds} rounds"
    )
    print(f"{'system':<44} {'test accuracy':>13} {'train s':>8} {'time ratio':>10}")
    names = {
        "service": "agent-training service (gRPC, worker process)",
        "in_process": "same engine in-process (plain torch loop)",
        "linear_svc": "TF-IDF word 1-2 + char 2-5 + LinearSVC",
    }
    for key in ("service", "in_process", "linear_svc"):
        row = results[key]
        ratio = row["train_seconds"] / svc["train_seconds"]
        print(
            f"{names[key]:<44} {row['accuracy']:>13.4f} {row['train_seconds']:>8.2f} {ratio:>10.2f}"
        )
    service = results["service"]
    print(
        f"service vs LinearSVC: accuracy {service['accuracy'] - svc['accuracy']:+.4f},"
        f" train time x{service['train_seconds'] / svc['train_seconds']:.2f}"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "banking77.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
