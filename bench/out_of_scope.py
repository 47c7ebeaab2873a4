"""banking77-oos: how well each agent tells in-scope messages from out-of-scope ones.

The data: 50 in-scope banking intents (train.csv, valid.csv, test.csv) and messages of the 27
other Banking77 intents, out of scope (id-oos-valid.csv, id-oos-test.csv): the hard case, same
domain and wording.

1. Through the service (one server, a fresh data folder): supervised on train.csv, few_shot on a
   fixed sample of 10 per intent, transfer on train.csv; no thresholds, so each answer carries
   its best output and its out-of-scope score (Prediction.out_of_scope_score).
2. Peers in the same run, on train.csv: TF-IDF + LinearSVC (its best decision value) and frozen
   all-MiniLM-L6-v2 embeddings + LogisticRegression (its best probability).
3. Negatives (examples labelled with the agents' fallback output), whether they help: supervised
   and transfer again with 500 messages of the service's out_of_scope generator (off-topic:
   weather, sport, recipes...), and with labelled out-of-scope messages: a fixed half of
   id-oos-valid.csv (264 messages of the 27 other intents, from Banking77's training set; the
   test files come from its test set). The peers get the same labelled half as a 51st class and
   score by their best in-scope class.

Each contender scores a message by how in-scope it looks (minus the out-of-scope score,
confidence, decision value). The threshold that keeps 95% of valid.csv's in-scope messages is
chosen on valid.csv only; the test files report: in-scope accuracy on test.csv, the AUROC
separating id-oos-test.csv (positive) from test.csv, and at the chosen threshold the
out-of-scope recall and the in-scope retention.
Prints one table; writes bench/results/out_of_scope.json.
Usage: python bench/out_of_scope.py [--data ../shared/data/banking77-oos] [--skip transfer ...]
(names: supervised, few_shot, transfer, and the same with +generated or +labelled)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from banking77 import REPO, accuracy_of, read_split, start_service
from few_shot import sample

DEFAULT_DATA = REPO.parent / "shared" / "data" / "banking77-oos"
RETENTION = 0.95
"""Share of in-scope validation messages the threshold keeps."""
SPLITS = ("valid", "id-oos-valid", "test", "id-oos-test")
FALLBACK = "fallback"
"""The agents' fallback output: examples labelled with it are negatives."""
GENERATED_NEGATIVES = 500
Data = tuple[list[str], list[str]]

Scorer = Callable[[list[str]], tuple[list[str], np.ndarray]]
"""Texts -> (best output, in-scope score) per text."""


def detection(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Threshold from the valid files, figures on the test files (out of scope = positive)."""
    from sklearn.metrics import roc_auc_score

    threshold = float(np.quantile(scores["valid"], 1 - RETENTION))
    in_test, oos_test = scores["test"], scores["id-oos-test"]
    truth = np.r_[np.zeros(len(in_test)), np.ones(len(oos_test))]
    return {
        "auroc": float(roc_auc_score(truth, -np.r_[in_test, oos_test])),
        "oos_recall": float((oos_test < threshold).mean()),
        "in_scope_retention": float((in_test >= threshold).mean()),
        "threshold": threshold,
    }


def evaluate(scorer: Scorer, data: dict[str, tuple[list[str], list[str]]]) -> dict[str, float]:
    """In-scope accuracy and detection figures of one contender."""
    scores = {}
    for split in SPLITS:
        outputs, scores[split] = scorer(data[split][0])
        if split == "test":
            accuracy = accuracy_of(outputs, data["test"][1])
    return {"in_scope_accuracy": accuracy, **detection(scores)}


def labelled_negatives(data: dict[str, Data]) -> Data:
    """A fixed half of id-oos-valid, labelled with the fallback output."""
    texts = data["id-oos-valid"][0]
    half = np.random.default_rng(0).permutation(len(texts))[: len(texts) // 2]
    return [texts[i] for i in sorted(half)], [FALLBACK] * len(half)


def with_negatives(train: Data, negatives: Data) -> Data:
    return train[0] + negatives[0], train[1] + negatives[1]


def in_scope_best(classes: np.ndarray, values: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The best in-scope class and its value (a fallback class, where trained, left out)."""
    values = np.where(classes == FALLBACK, -np.inf, values)
    return list(classes[values.argmax(axis=1)]), values.max(axis=1)


def linear_svc(train: Data) -> tuple[Scorer, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.svm import LinearSVC

    started = time.perf_counter()
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    model = make_pipeline(FeatureUnion([("words", words), ("chars", chars)]), LinearSVC())
    model.fit(*train)
    seconds = time.perf_counter() - started

    def scorer(texts: list[str]) -> tuple[list[str], np.ndarray]:
        return in_scope_best(model.classes_, model.decision_function(texts))

    return scorer, seconds


def frozen_embeddings_lr(train: Data) -> tuple[Scorer, float]:
    import torch
    from sklearn.linear_model import LogisticRegression

    from agent_training_server.engines.pretrained import SentenceEncoder

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    encoder = SentenceEncoder()
    model = LogisticRegression(max_iter=2000, C=10.0).fit(encoder.embed(train[0]).numpy(), train[1])
    seconds = time.perf_counter() - started

    def scorer(texts: list[str]) -> tuple[list[str], np.ndarray]:
        return in_scope_best(model.classes_, model.predict_proba(encoder.embed(texts).numpy()))

    return scorer, seconds


def generated_negatives(client) -> Data:
    """Off-topic messages of the service's out_of_scope generator, labelled with the fallback."""
    from agent_training.v1 import synthetic_pb2

    texts = [
        item.example.input
        for message in client.generate_synthetic_training_data(
            data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_OUT_OF_SCOPE, count=GENERATED_NEGATIVES
        )
        for item in message.examples
    ]
    return texts, [FALLBACK] * len(texts)


def through_service(
    trainings: dict[str, tuple[int, Data]],
    data: dict[str, Data],
    generated_for: set[str],
) -> dict[str, dict[str, float]]:
    """Train each paradigm through one service and evaluate its answers' out-of-scope score.

    The trainings named in ``generated_for`` also get the out_of_scope generator's negatives.
    """
    from agent_training.v1 import agents_pb2, training_pb2
    from agent_training_client import AgentTrainingClient

    results = {}
    with tempfile.TemporaryDirectory() as data_dir:
        # No /metrics endpoint: nothing here reads it, and its port stays free for others.
        process, address = start_service(Path(data_dir), "--metrics-address", "")
        try:
            with AgentTrainingClient(address, timeout=900) as client:
                generated = generated_negatives(client) if generated_for else ([], [])
                for name, (training_type, examples) in trainings.items():
                    if name in generated_for:
                        examples = with_negatives(examples, generated)
                    client.create_agent(
                        agent_id=name.replace("+", "-"),
                        default_behavior=agents_pb2.BehaviorSettings(fallback_output=FALLBACK),
                    )
                    started = time.perf_counter()
                    events = list(
                        client.train_agent(
                            agent_id=name.replace("+", "-"),
                            training_type=training_type,
                            training_data=[
                                training_pb2.TrainingExample(input=text, expected_output=label)
                                for text, label in zip(*examples, strict=True)
                            ],
                        )
                    )
                    seconds = time.perf_counter() - started
                    final = events[-1].finished
                    if final.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
                        raise RuntimeError(f"{name} training failed: {final.error}")

                    def scorer(texts: list[str], agent: str = name) -> tuple[list[str], np.ndarray]:
                        outputs, scores = [], []
                        for start in range(0, len(texts), 500):
                            answer = client.invoke_agent(
                                agent_id=agent.replace("+", "-"), inputs=texts[start : start + 500]
                            )
                            outputs += [p.output for p in answer.predictions]
                            scores += [-p.out_of_scope_score for p in answer.predictions]
                        return outputs, np.array(scores)

                    results[name] = {**evaluate(scorer, data), "train_seconds": seconds}
        finally:
            process.terminate()
            process.wait(30)
    return results


def main() -> None:
    from agent_training.v1 import training_pb2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--skip", nargs="*", default=[], help="paradigms not to train")
    args = parser.parse_args()
    data = {split: read_split(args.data / f"{split}.csv") for split in ("train", *SPLITS)}
    supervised, transfer = (
        training_pb2.TRAINING_TYPE_SUPERVISED,
        training_pb2.TRAINING_TYPE_TRANSFER,
    )
    labelled = with_negatives(data["train"], labelled_negatives(data))
    trainings = {
        "supervised": (supervised, data["train"]),
        "few_shot": (training_pb2.TRAINING_TYPE_FEW_SHOT, sample(data["train"], 10)),
        "transfer": (transfer, data["train"]),
        "supervised+generated": (supervised, data["train"]),
        "transfer+generated": (transfer, data["train"]),
        "supervised+labelled": (supervised, labelled),
        "transfer+labelled": (transfer, labelled),
    }
    trainings = {name: value for name, value in trainings.items() if name not in args.skip}
    results = {}
    peers = (("linear_svc", linear_svc), ("frozen_embeddings_lr", frozen_embeddings_lr))
    for name, build in peers:
        for variant, train in (("", data["train"]), ("+labelled", labelled)):
            scorer, seconds = build(train)
            results[name + variant] = {**evaluate(scorer, data), "train_seconds": seconds}
    generated_for = {name for name in trainings if name.endswith("+generated")}
    results.update(through_service(trainings, data, generated_for))

    print(
        f"{args.data.name}: {len(set(data['train'][1]))} in-scope intents,"
        f" {len(data['test'][0])} in-scope and {len(data['id-oos-test'][0])} out-of-scope test"
        f" messages; threshold keeping {RETENTION:.0%} of in-scope validation; {os.cpu_count()}"
        " cores"
    )
    print(
        f"{'contender (score)':<60} {'in-scope acc':>12} {'AUROC':>6} {'OOS recall':>10}"
        f" {'retention':>9} {'train s':>8}"
    )
    names = {
        "linear_svc": "TF-IDF + LinearSVC (best margin)",
        "frozen_embeddings_lr": "frozen MiniLM + LR (best probability)",
        "supervised": "supervised (out-of-scope score)",
        "few_shot": "few_shot, 10/intent (out-of-scope score)",
        "transfer": "transfer (out-of-scope score)",
    }
    extra = {
        "+generated": f" + {GENERATED_NEGATIVES} generated negatives",
        "+labelled": " + labelled negatives",
    }
    for key, row in results.items():
        base, _, variant = key.partition("+")
        label = names[base] + (extra["+" + variant] if variant else "")
        print(
            f"{label:<60} {row['in_scope_accuracy']:>12.4f} {row['auroc']:>6.3f}"
            f" {row['oos_recall']:>10.3f} {row['in_scope_retention']:>9.3f}"
            f" {row['train_seconds']:>8.1f}"
        )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "out_of_scope.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
