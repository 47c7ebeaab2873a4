"""What kept checkpoints, versions from them and exports cost, per paradigm, on Banking77.

Starts the service (a fresh data folder) and, for supervised (the whole training file), few_shot
(10 examples per intent) and transfer (the whole training file), with default settings: trains
an agent, lists its kept checkpoints (their size on disk), makes a version from the best one
(CreateVersionFromCheckpoint: its time, and whether its validation accuracy is the job's), and
exports the active version (ExportAgentVersion through the Python client: its time and size).
Prints one line per paradigm; writes bench/results/checkpoints.json.
Usage: python bench/checkpoints.py [--data ../shared/data/banking77]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from banking77 import DEFAULT_DATA, REPO, read_split, start_service


def examples_of(texts: list[str], labels: list[str], per_output: int | None) -> list:
    from agent_training.v1 import training_pb2

    counts: dict[str, int] = {}
    examples = []
    for text, label in zip(texts, labels, strict=True):
        counts[label] = counts.get(label, 0) + 1
        if per_output is None or counts[label] <= per_output:
            examples.append(training_pb2.TrainingExample(input=text, expected_output=label))
    return examples


def measure(client, agent_id: str, examples: list, training_type: int, folder: Path) -> dict:
    client.create_agent(agent_id=agent_id)
    started = time.perf_counter()
    events = list(
        client.train_agent(
            agent_id=agent_id, training_data=examples, training_type=training_type, timeout=3600
        )
    )
    train_seconds = time.perf_counter() - started
    job = client.get_training_job(events[0].training_id)
    kept = list(client.iter_training_checkpoints(job.training_id))
    best = next(checkpoint for checkpoint in kept if checkpoint.best)
    started = time.perf_counter()
    version = client.create_version_from_checkpoint(job.training_id, best.checkpoint_id)
    version_seconds = time.perf_counter() - started
    started = time.perf_counter()
    header, _path = client.export_agent_version(agent_id, path=folder / f"{agent_id}.tar")
    export_seconds = time.perf_counter() - started
    return {
        "train_seconds": train_seconds,
        "epochs_run": job.metrics.epochs_run,
        "kept": [checkpoint.checkpoint_id for checkpoint in kept],
        "kept_megabytes": [checkpoint.size_bytes / 1e6 for checkpoint in kept],
        "version_from_best_seconds": version_seconds,
        "same_validation_accuracy": (
            version.metrics.validation_accuracy == job.metrics.validation_accuracy
        ),
        "export_seconds": export_seconds,
        "bundle_megabytes": header.size_bytes / 1e6,
        "onnx": header.onnx,
    }


def main() -> None:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    texts, labels = read_split(args.data / "train.csv")
    runs = {
        "supervised": (examples_of(texts, labels, None), training_pb2.TRAINING_TYPE_SUPERVISED),
        "few_shot": (examples_of(texts, labels, 10), training_pb2.TRAINING_TYPE_FEW_SHOT),
        "transfer": (examples_of(texts, labels, None), training_pb2.TRAINING_TYPE_TRANSFER),
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        process, address = start_service(Path(folder) / "data")
        try:
            with AgentTrainingClient(address, timeout=3600) as client:
                for name, (examples, training_type) in runs.items():
                    row = measure(client, name, examples, training_type, Path(folder))
                    results[name] = row
                    print(
                        f"{name}: trained in {row['train_seconds']:.1f} s, kept {row['kept']}"
                        f" ({', '.join(f'{mb:.1f}' for mb in row['kept_megabytes'])} MB); a"
                        f" version from the best in {row['version_from_best_seconds']:.1f} s"
                        f" (same validation accuracy: {row['same_validation_accuracy']});"
                        f" export {row['export_seconds']:.1f} s, {row['bundle_megabytes']:.1f}"
                        f" MB, ONNX {row['onnx']}",
                        flush=True,
                    )
        finally:
            process.terminate()
            process.wait(60)
    results["cores"] = os.cpu_count()
    out = REPO / "bench" / "results" / "checkpoints.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
