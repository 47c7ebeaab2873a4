"""Banking77 through the running service, against scikit-learn's TF-IDF + LinearSVC, in one run.

Several ``--data`` folders are merged into one data set (their train.csv files concatenated, and
their test.csv files): Banking77 + HWU64 makes 141 outputs, a larger output space than either.

1. Starts the service (``agent-training serve``) on a free loopback port with a fresh data folder.
2. Trains on train.csv with one TrainAgent call carrying the data, timed from the call to the
   final event, then scores test.csv with InvokeAgent batches: twice, with the defaults (10% of
   the examples held out to measure on) and with ``validation_split`` 0 (every example trains,
   as the peer's do).
3. Fits TF-IDF (word 1-2 grams + char 2-5 grams, sublinear tf) + LinearSVC on the same split.
4. Trains the same engine in-process (no gRPC, no worker) to show what the service adds.

Each contender is timed ROUNDS times, all interleaved round by round, and the median is
reported: the machine is shared and noisy, so the comparison is the ratio of medians within one
run; each median comes with the fastest and slowest round, and the 1-minute load average is read
before and after. Round N trains with seed N (LinearSVC is deterministic): one seed's accuracy
is one draw of the split, the order and the start, so the accuracy reported is the mean over the
rounds' seeds, with the lowest and highest. Prints one table and writes
bench/results/banking77.json (other data: bench/results/NAME-NAME.json).
Usage:
    python bench/banking77.py [--data ../shared/data/banking77 [../shared/data/hwu64]] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "banking77"


def read_split(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["text"] for row in rows], [row["category"] for row in rows]


def read_merged(folders: list[Path], split: str) -> tuple[list[str], list[str]]:
    """One split of several data sets, concatenated; their output names must not collide."""
    texts: list[str] = []
    labels: list[str] = []
    for folder in folders:
        more_texts, more_labels = read_split(folder / f"{split}.csv")
        if split == "train" and set(more_labels) & set(labels):
            shared = sorted(set(more_labels) & set(labels))[:5]
            raise SystemExit(f"{folder.name} shares output names with the others: {shared}")
        texts += more_texts
        labels += more_labels
    return texts, labels


def accuracy_of(predicted: list[str], expected: list[str]) -> float:
    return sum(p == y for p, y in zip(predicted, expected, strict=True)) / len(expected)


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    """The median train time with its range, and the mean accuracy over the rounds' seeds."""
    ordered = sorted(rounds, key=lambda row: row["train_seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    accuracies = [row["accuracy"] for row in rounds]
    chosen["accuracy"] = sum(accuracies) / len(accuracies)
    chosen["accuracy_all"] = [round(value, 4) for value in accuracies]
    chosen["accuracy_min"], chosen["accuracy_max"] = min(accuracies), max(accuracies)
    chosen["train_seconds_all"] = [round(row["train_seconds"], 3) for row in rounds]
    chosen["train_seconds_min"] = ordered[0]["train_seconds"]
    chosen["train_seconds_max"] = ordered[-1]["train_seconds"]
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


@contextlib.contextmanager
def service_rounds(train, test) -> Iterator[Callable[[int], dict[str, float]]]:
    """A started, warmed-up service; the function it yields trains and scores one round."""
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    examples = [
        training_pb2.TrainingExample(input=text, expected_output=label)
        for text, label in zip(*train, strict=True)
    ]

    def one_round(
        client: AgentTrainingClient, round_number: int, validation_split: float | None = None
    ) -> dict[str, float]:
        agent_id = f"supervised-{round_number}-{validation_split}"
        client.create_agent(agent_id=agent_id)
        config = training_pb2.TrainingConfig(validation_split=validation_split, seed=round_number)
        started = time.perf_counter()
        events = list(client.train_agent(agent_id=agent_id, training_data=examples, config=config))
        seconds = time.perf_counter() - started
        final = events[-1].finished
        if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
            raise RuntimeError(f"training failed: {final.error}")
        predicted = []
        for start in range(0, len(test[0]), 1000):
            response = client.invoke_agent(agent_id=agent_id, inputs=test[0][start : start + 1000])
            predicted += [p.output for p in response.predictions]
        return {
            "accuracy": accuracy_of(predicted, test[1]),
            "train_seconds": seconds,
            "epochs_run": final.metrics.epochs_run,
            "validation_accuracy": final.metrics.validation_accuracy,
        }

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
                yield functools.partial(one_round, client)
        finally:
            process.terminate()
            process.wait(30)


class SilentReporter:
    """A training reporter that discards progress (in-process runs)."""

    def progress(self, update: object) -> None:
        """Discard the update."""

    def cancelled(self) -> bool:
        """Never cancelled."""
        return False


def in_process_round(train, test, seed: int = 0) -> dict[str, float]:
    """Train the supervised engine in this process (no service) and score it on test."""
    import dataclasses

    import torch

    from agent_training_server.engines import registry
    from agent_training_server.engines.base import Example
    from agent_training_server.engines.defaults import defaults_for

    torch.set_num_threads(os.cpu_count() or 1)
    examples = [Example(text, label) for text, label in zip(*train, strict=True)]
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        artifact = registry.get_engine("supervised").train(
            examples,
            dataclasses.replace(defaults_for("supervised"), seed=seed),
            SilentReporter(),
            Path(workdir),
        )
        seconds = time.perf_counter() - started
    predictor = registry.load_predictor(artifact.spec, artifact.tensors)
    best = predictor.predict_proba(test[0]).argmax(axis=1)
    accuracy = accuracy_of([artifact.outputs[i] for i in best], test[1])
    return {"accuracy": accuracy, "train_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, nargs="+", default=[DEFAULT_DATA], help="one or more data folders"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each contender")
    args = parser.parse_args()
    train = read_merged(args.data, "train")
    test = read_merged(args.data, "test")
    load_before = os.getloadavg()[0]

    rounds: dict[str, list[dict[str, float]]] = {
        "linear_svc": [],
        "service": [],
        "service_all_examples": [],
        "in_process": [],
    }
    with service_rounds(train, test) as service_round:
        in_process_round(train, test)  # pays torch's one-time imports: dropped
        for round_number in range(args.rounds):  # interleaved: load changes hit all alike
            rounds["linear_svc"].append(linear_svc(train, test))
            rounds["service"].append(service_round(round_number))
            rounds["service_all_examples"].append(service_round(round_number, 0.0))
            rounds["in_process"].append(in_process_round(train, test, round_number))
    results: dict[str, Any] = {name: median_of(rows) for name, rows in rounds.items()}
    results["data"] = [folder.name for folder in args.data]
    results["load_average"] = [load_before, os.getloadavg()[0]]
    svc = results["linear_svc"]
    print(
        f"{' + '.join(results['data'])}: {len(train[0])} train / {len(test[0])} test examples,"
        f" {len(set(train[1]))} outputs, {os.cpu_count()} cores, median time and mean accuracy"
        f" of {args.rounds} rounds (seeds 0-{args.rounds - 1}),"
        f" load {load_before:.2f} -> {results['load_average'][1]:.2f}"
    )
    print(
        f"{'system':<44} {'test accuracy':>13} {'acc min-max':>13} {'train s':>8}"
        f" {'min-max':>11} {'ratio':>6}"
    )
    names = {
        "service": "agent-training service (gRPC, worker process)",
        "service_all_examples": "the same, validation_split 0 (all examples)",
        "in_process": "same engine in-process (plain torch loop)",
        "linear_svc": "TF-IDF word 1-2 + char 2-5 + LinearSVC",
    }
    for key in ("service", "service_all_examples", "in_process", "linear_svc"):
        row = results[key]
        ratio = row["train_seconds"] / svc["train_seconds"]
        spread = f"{row['train_seconds_min']:.2f}-{row['train_seconds_max']:.2f}"
        accuracies = f"{row['accuracy_min']:.4f}-{row['accuracy_max']:.4f}"
        print(
            f"{names[key]:<44} {row['accuracy']:>13.4f} {accuracies:>13}"
            f" {row['train_seconds']:>8.2f} {spread:>11} {ratio:>6.2f}"
        )
    for key in ("service", "service_all_examples"):
        service = results[key]
        print(
            f"{key} vs LinearSVC: accuracy {service['accuracy'] - svc['accuracy']:+.4f},"
            f" train time x{service['train_seconds'] / svc['train_seconds']:.2f}"
        )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{'-'.join(results['data'])}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
