"""The encoder agents' serving runtime: ONNX Runtime against torch, accuracy and texts/s.

For each data set a few_shot version is trained through the engine on a fixed-seed sample of 10
examples per intent (bench/few_shot.py's sample; kept in --work and reused on later runs), saved
as a version's files, and loaded three ways: as served (ONNX Runtime, one intra-op thread, the
exported model cached in the artifact folder), the same with 2 threads, and with onnxruntime made
unimportable (the torch fallback, with torch's default threads, as the server has them). Each
scores the whole test.csv (accuracy; the largest difference of any probability, torch against
served), then predict_proba is timed on test texts in a shuffled order: one text per call, and
32 per call.
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
RUNTIMES = {"torch": 0, "onnxruntime": 1, "onnxruntime 2 threads": 2}
"""Runtime name: ONNX Runtime intra-op threads (0: onnxruntime made unimportable, torch serves)."""
SERVED = "onnxruntime"


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


def load(folder: Path, threads: int):
    """The version's predictor, as served with ``threads`` per session, or (0) on torch."""
    from agent_training_server.engines import encoder_runtime, registry

    spec, tensors, _ = registry.load_artifact_files(folder)
    saved = sys.modules.get("onnxruntime"), encoder_runtime.THREADS
    if threads == 0:
        sys.modules["onnxruntime"] = None  # type: ignore[assignment]  # import raises ImportError
    encoder_runtime.THREADS = threads
    try:
        started = time.perf_counter()
        predictor = registry.load_predictor(spec, tensors, folder)
        return predictor, time.perf_counter() - started
    finally:
        encoder_runtime.THREADS = saved[1]
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
    for name, threads in RUNTIMES.items():
        predictor, load_seconds = load(folder, threads)
        assert predictor.runtime == name.split()[0], predictor.runtime
        probabilities[name] = predictor.predict_proba(texts)
        predicted = [predictor.outputs[i] for i in probabilities[name].argmax(axis=1)]
        row[name] = {
            "load_seconds": load_seconds,
            "accuracy": float(np.mean([p == y for p, y in zip(predicted, labels, strict=True)])),
            "batch_1_texts_per_second": texts_per_second(predictor, shuffled, 1, seconds),
            "batch_32_texts_per_second": texts_per_second(predictor, shuffled, 32, seconds),
        }
    difference = np.abs(probabilities["torch"] - probabilities[SERVED]).max()
    row["max_probability_difference"] = float(difference)
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
    print(f"{'data set':<10} {'runtime':<22} {'accuracy':>8} {'batch 1/s':>10} {'batch 32/s':>10}")
    for name, row in results.items():
        for runtime in RUNTIMES:
            figures = row[runtime]
            print(
                f"{name:<10} {runtime:<22} {figures['accuracy']:>8.4f}"
                f" {figures['batch_1_texts_per_second']:>10.1f}"
                f" {figures['batch_32_texts_per_second']:>10.1f}"
            )
        print(f"{'':<10} max |p_torch - p_onnx| = {row['max_probability_difference']:.2g}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "encoder_runtime.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
