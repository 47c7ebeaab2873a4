"""Banking77 supervised training: the local executor against Ray with one and with two workers.

1. Starts three services (``agent-training serve``): ``--executor local`` as configured by
   default (one worker, torch threads = cores), the same with one torch thread (what Ray gives a
   one-CPU worker), and ``--executor ray`` (a Ray instance the service starts on this machine).
   Each round trains the full train.csv once on each in turn, and on Ray with ``num_workers`` 1
   and 2; the median of the rounds is reported, as the machine is shared and noisy.
2. Each job is timed from the TrainAgent call to its final event (what a user waits for) and
   scored on test.csv through InvokeAgent. The engine's own training time and the examples per
   second each worker sustained come from the job's metrics (with two workers, rank 0's).

On a machine with few cores Ray adds overhead rather than speed: its processes, a worker group
started per data-parallel job, and a gradient all-reduce per step. The per-worker examples per
second is what extrapolates to a cluster. Writes bench/results/ray_executor.json. Usage:
    python bench/ray_executor.py [--data ../shared/data/banking77] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, accuracy_of, read_split

REPO = Path(__file__).resolve().parents[1]


def start_service(data_dir: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "agent_training_client", "serve", "--address", "127.0.0.1:0"),
            *("--data-dir", str(data_dir), "--log-level", "WARNING", "--metrics-address", ""),
            *flags,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"},
    )
    line = process.stdout.readline()
    match = re.search(r"on (127\.0\.0\.1:\d+)", line)
    if not match:
        process.kill()
        raise RuntimeError(f"service did not start: {line!r}")
    return process, match.group(1)


def train_once(client, agent_id: str, examples, test, num_workers: int) -> dict[str, float]:
    from agent_training.v1 import training_pb2

    client.create_agent(agent_id=agent_id)
    config = training_pb2.TrainingConfig(num_workers=num_workers)
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
    metrics = final.metrics
    return {
        "wall_seconds": seconds,
        "engine_seconds": metrics.duration_seconds,
        "overhead_seconds": seconds - metrics.duration_seconds,
        "examples_per_second_per_worker": metrics.examples_per_second,
        "epochs_run": metrics.epochs_run,
        "validation_accuracy": metrics.validation_accuracy,
        "test_accuracy": accuracy_of(predicted, test[1]),
    }


CONTENDERS = [
    # (label, service flags, num_workers of its jobs)
    ("local", ["--executor", "local", "--workers", "1"], [1]),
    ("local, 1 thread", ["--executor", "local", "--workers", "1", "--torch-threads", "1"], [1]),
    ("ray", ["--executor", "ray", "--workers", "1"], [1, 2]),
]


def warm_up(client, examples) -> None:
    """A tiny job: worker processes import torch once, as in a running service."""
    from agent_training.v1 import training_pb2

    client.create_agent(agent_id="warmup")
    config = training_pb2.TrainingConfig(epochs=1)
    list(client.train_agent(agent_id="warmup", training_data=examples[:200], config=config))


def run(train, test, rounds: int) -> dict[str, dict]:
    """All services up at once; each round trains once on each, in turn (noise hits all alike)."""
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    examples = [
        training_pb2.TrainingExample(input=text, expected_output=label)
        for text, label in zip(*train, strict=True)
    ]
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        clients = {}
        for label, flags, workers in CONTENDERS:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            started = time.perf_counter()
            process, address = start_service(data_dir, *flags)
            stack.callback(stop_service, process)
            client = stack.enter_context(AgentTrainingClient(address, timeout=900))
            warm_up(client, examples)
            clients[label] = client
            results[label] = {
                "flags": flags,
                "service_start_seconds": time.perf_counter() - started,
                "jobs": {count: [] for count in workers},
            }
        for round_number in range(rounds):
            for label, _flags, workers in CONTENDERS:
                for count in workers:
                    agent_id = f"banking77-{count}-{round_number}"
                    row = train_once(clients[label], agent_id, examples, test, count)
                    results[label]["jobs"][count].append(row)
    return results


def stop_service(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(60)


def median(rows: list[dict[str, float]]) -> dict[str, float]:
    ordered = sorted(rows, key=lambda row: row["wall_seconds"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["wall_seconds_all"] = [round(row["wall_seconds"], 1) for row in rows]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    train, test = read_split(args.data / "train.csv"), read_split(args.data / "test.csv")

    results = run(train, test, args.rounds)
    print(
        f"Banking77 supervised, {len(train[0])} train / {len(test[0])} test,"
        f" {os.cpu_count()} cores, median of {args.rounds} rounds"
    )
    print(
        "| executor | workers | job wall s | engine s | overhead s | examples/s per worker |"
        " test accuracy | all rounds, wall s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, result in results.items():
        for count, rows in result["jobs"].items():
            row = median(rows)
            result["jobs"][count] = {"median": row, "rounds": rows}
            print(
                f"| {label} | {count} | {row['wall_seconds']:.1f} | {row['engine_seconds']:.1f} |"
                f" {row['overhead_seconds']:.1f} | {row['examples_per_second_per_worker']:,.0f} |"
                f" {row['test_accuracy']:.2%} | {row['wall_seconds_all']} |"
            )
    output = REPO / "bench" / "results" / "ray_executor.json"
    output.parent.mkdir(exist_ok=True)
    output.write_text(json.dumps({"cores": os.cpu_count(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
