"""The encoder agents' serving runtime: ONNX Runtime and bfloat16 against torch, accuracy, texts/s.

For each data set a few_shot version is trained through the engine on a fixed-seed sample of 10
examples per intent (bench/few_shot.py's sample; kept in --work and reused on later runs), saved
as a version's files, and loaded four ways: as served on a CPU with native bfloat16 (ONNX
Runtime in float32 on one intra-op thread for fewer than 4 texts, torch in bfloat16 for more),
float32 only on ONNX Runtime with 1 and with 2 threads (the exported model cached in the artifact
folder), and with onnxruntime made unimportable and no bfloat16 (the torch fallback, on the
intra-op threads the server gives it: half the cores). Each scores the whole test.csv (accuracy;
the largest difference of any probability against torch), then predict_proba is timed on test
texts in a shuffled order: 1, 8 and 32 texts per call.
Prints one table; writes bench/results/encoder_runtime.json.
Usage: python bench/encoder_runtime.py [--data ../shared/data] [--work /tmp/encoder-runtime]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
from banking77 import REPO, read_split
from few_shot import sample

DATA_SETS = ("banking77", "hwu64")
RUNTIMES = {
    "torch": (0, False),
    "onnxruntime": (1, False),
    "onnxruntime 2 threads": (2, False),
    "onnxruntime + bfloat16": (1, True),
}
"""Name: (ONNX Runtime intra-op threads, 0 = onnxruntime made unimportable; bfloat16 batches)."""
RUNTIME_NAMES = {
    "torch": "torch",
    "onnxruntime": "onnxruntime",
    "onnxruntime 2 threads": "onnxruntime",
    "onnxruntime + bfloat16": "onnxruntime+torch-bfloat16",
}
"""What the predictor says it runs on, for each (checked)."""
BATCHES = (1, 8, 32)


class Quiet:
    """A reporter that drops progress and never cancels."""

    def progress(self, update: object) -> None:
        """Dropped."""

    def cancelled(self) -> bool:
        """Never."""
        return False


def trained_version(data: Path, work: Path) -> Path:
    """The artifact folder of a few_shot version trained on ``data`` (trained on first use)."""
    from agent_training_server.engines import registry
    from agent_training_server.engines.base import Example
    from agent_training_server.engines.defaults import defaults_for

    folder = work / data.name / "artifact"
    if (folder / registry.SPEC_FILE).exists():
        return folder
    shots = sample(read_split(data / "train.csv"), 10)
    examples = [Example(text, label) for text, label in zip(*shots, strict=True)]
    settings = dataclasses.replace(defaults_for("few_shot"), seed=0)
    artifact = registry.get_engine("few_shot").train(
        examples, settings, Quiet(), work / data.name / "job"
    )
    registry.save_artifact(artifact, folder)
    return folder


def load(folder: Path, threads: int, bfloat16: bool):
    """The version's predictor, as served with ``threads`` per session, or (0) on torch."""
    from agent_training_server.engines import encoder_runtime, precision, registry

    spec, tensors, _ = registry.load_artifact_files(folder)
    saved = sys.modules.get("onnxruntime"), encoder_runtime.THREADS, precision.native_bfloat16
    if threads == 0:
        sys.modules["onnxruntime"] = None  # type: ignore[assignment]  # import raises ImportError
    if threads:  # torch reads THREADS at each call: the served count (one thread on 2 cores)
        encoder_runtime.THREADS = threads
    precision.native_bfloat16 = lambda: bfloat16
    try:
        started = time.perf_counter()
        predictor = registry.load_predictor(spec, tensors, folder)
        return predictor, time.perf_counter() - started
    finally:
        encoder_runtime.THREADS, precision.native_bfloat16 = saved[1], saved[2]
        if saved[0] is not None:
            sys.modules["onnxruntime"] = saved[0]
        else:
            sys.modules.pop("onnxruntime", None)


def texts_per_second(predictor, texts: list[str], batch: int, seconds: float) -> float:
    """Calls of ``batch`` texts each, cycling through ``texts``, for about ``seconds``."""
    predictor.predict_proba(texts[:batch])  # warm up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        start = done % (len(texts) - batch)
        predictor.predict_proba(texts[start : start + batch])
        done += batch
    return done / (time.perf_counter() - started)


def measure(data: Path, work: Path, seconds: float) -> dict[str, object]:
    """Accuracy and texts/s of each runtime on the version trained on ``data``."""
    folder = trained_version(data, work)
    texts, labels = read_split(data / "test.csv")
    shuffled = random.Random(0).sample(texts, len(texts))
    row: dict[str, object] = {"test_examples": len(texts)}
    probabilities = {}
    for name, (threads, bfloat16) in RUNTIMES.items():
        predictor, load_seconds = load(folder, threads, bfloat16)
        assert predictor.runtime == RUNTIME_NAMES[name], predictor.runtime
        probabilities[name] = predictor.predict_proba(texts)
        predicted = [predictor.outputs[i] for i in probabilities[name].argmax(axis=1)]
        difference = np.abs(probabilities["torch"] - probabilities[name]).max()
        row[name] = {
            "load_seconds": load_seconds,
            "accuracy": float(np.mean([p == y for p, y in zip(predicted, labels, strict=True)])),
            "max_probability_difference": float(difference),
            **{
                f"batch_{batch}_texts_per_second": texts_per_second(
                    predictor, shuffled, batch, seconds
                )
                for batch in BATCHES
            },
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/encoder-runtime"))
    parser.add_argument("--seconds", type=float, default=10.0, help="per timing")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    results = {name: measure(args.data / name, args.work, args.seconds) for name in DATA_SETS}
    print(
        f"few_shot versions (10 examples per intent), {os.cpu_count()} cores,"
        f" torch {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    rates = "".join(f" {f'batch {batch}/s':>11}" for batch in BATCHES)
    print(f"{'data set':<10} {'runtime':<24} {'accuracy':>8} {'max |dp|':>9}{rates}")
    for name, row in results.items():
        for runtime in RUNTIMES:
            figures = row[runtime]
            rates = "".join(
                f" {figures[f'batch_{batch}_texts_per_second']:>11.1f}" for batch in BATCHES
            )
            print(
                f"{name:<10} {runtime:<24} {figures['accuracy']:>8.4f}"
                f" {figures['max_probability_difference']:>9.2g}{rates}"
            )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoder_runtime.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
