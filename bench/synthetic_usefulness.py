"""Is synthetic data useful? Banking77 10-shot, supervised, with and without paraphrases.

A fixed-seed sample of 10 training examples per intent (770) trains three supervised agents
through the service, same engine and settings, in the same run:
1. on the sample alone;
2. on the sample plus `paraphrases` of it from GenerateSyntheticTrainingData (default 10 per
   source example, medium difficulty, seed 0), with the shipped lexicon's synonyms only;
3. the same with `encoder_synonyms` (synonyms the pretrained encoder finds, checked in context).
All are scored on the full test.csv through InvokeAgent. Prints one table; writes
bench/results/synthetic_usefulness.json. The default run is the figure docs/benchmarks.md reports
(the gain of the third agent over the first); other sample and generator seeds show how it varies.

Both agents train with the engine's default validation split (a tenth of each intent held out for
early stopping): the sample-only agent then learns from 9 examples per intent, while the other
still sees paraphrases of all 10. `--validation-split 0` trains both on everything they are
given, which isolates what the paraphrases themselves add.
Usage: python bench/synthetic_usefulness.py [--variants 10] [--difficulty medium]
    [--sample-seed 0] [--seed 0] [--validation-split FRACTION]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from banking77 import DEFAULT_DATA, REPO, accuracy_of, read_split, start_service
from few_shot import sample


def train_and_score(client, agent_id: str, examples, test, config) -> dict[str, float]:
    from agent_training.v1 import training_pb2

    client.create_agent(agent_id=agent_id)
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
        "examples": len(examples),
    }


def paraphrase(client, sources, args, encoder_synonyms: bool) -> tuple[list, Any, float]:
    """The paraphrases of `sources`, the generation summary and the seconds it took."""
    from agent_training.v1 import synthetic_pb2

    started = time.perf_counter()
    augmented, summary = [], None
    for message in client.generate_synthetic_training_data(
        data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_PARAPHRASES,
        count=len(sources) * args.variants,
        parameters=synthetic_pb2.SyntheticDataParameters(
            source_examples=sources,
            difficulty=synthetic_pb2.Difficulty.Value(f"DIFFICULTY_{args.difficulty.upper()}"),
            seed=args.seed,
            encoder_synonyms=encoder_synonyms,
        ),
    ):
        augmented += [e.example for e in message.examples]
        summary = message.summary if message.HasField("summary") else summary
    return augmented, summary, time.perf_counter() - started


def main() -> None:
    from agent_training.v1 import training_pb2
    from agent_training_client import AgentTrainingClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variants", type=int, default=10, help="paraphrases per example")
    parser.add_argument("--difficulty", default="medium", choices=("easy", "medium", "hard"))
    parser.add_argument(
        "--sample-seed", type=int, default=0, help="which 10 examples per intent are drawn"
    )
    parser.add_argument("--seed", type=int, default=0, help="the generator's seed")
    parser.add_argument(
        "--validation-split",
        type=float,
        default=None,
        help="held out of each agent's data for early stopping (default: the engine's, 0.1)",
    )
    args = parser.parse_args()
    config = training_pb2.TrainingConfig(validation_split=args.validation_split)
    shots = sample(read_split(args.data / "train.csv"), 10, args.sample_seed)
    test = read_split(args.data / "test.csv")
    sources = [
        training_pb2.TrainingExample(input=text, expected_output=label)
        for text, label in zip(*shots, strict=True)
    ]
    with tempfile.TemporaryDirectory() as data_dir:
        process, address = start_service(Path(data_dir))
        try:
            with AgentTrainingClient(address, timeout=600) as client:
                plain = train_and_score(client, "sample-only", sources, test, config)
                lexicon, _summary, lexicon_seconds = paraphrase(client, sources, args, False)
                with_lexicon = train_and_score(
                    client, "with-lexicon-paraphrases", sources + lexicon, test, config
                )
                augmented, summary, generate_seconds = paraphrase(client, sources, args, True)
                boosted = train_and_score(
                    client, "with-paraphrases", sources + augmented, test, config
                )
        finally:
            process.terminate()
            process.wait(30)
    results = {
        "sample_seed": args.sample_seed,
        "generator_seed": args.seed,
        "validation_split": args.validation_split,
        "sample_only": plain,
        "with_lexicon_paraphrases": with_lexicon,
        "with_paraphrases": boosted,
        "paraphrases": len(augmented),
        "lexicon_generate_seconds": lexicon_seconds,
        "generate_seconds": generate_seconds,
        "shortfall_reason": summary.shortfall_reason if summary else "",
        "lexicon_gain_points": 100 * (with_lexicon["accuracy"] - plain["accuracy"]),
        "gain_points": 100 * (boosted["accuracy"] - plain["accuracy"]),
    }
    print(
        f"Banking77 10 per intent ({len(sources)}), supervised from scratch, "
        f"{len(test[0])} test examples, {os.cpu_count()} cores; "
        f"sample seed {args.sample_seed}, generator seed {args.seed}, validation split "
        f"{'engine default' if args.validation_split is None else args.validation_split}"
    )
    print(f"{'training data':<52} {'test accuracy':>13} {'train s':>8} {'gain':>7}")
    rows = [
        ("sample only", plain, 0.0),
        (
            f"sample + {len(lexicon)} paraphrases (lexicon)",
            with_lexicon,
            results["lexicon_gain_points"],
        ),
        (
            f"sample + {len(augmented)} paraphrases (+ encoder synonyms)",
            boosted,
            results["gain_points"],
        ),
    ]
    for label, scores, gain in rows:
        print(
            f"{label:<52} {scores['accuracy']:>13.4f} {scores['train_seconds']:>8.1f} {gain:>+7.2f}"
        )
    print(
        f"{args.difficulty} paraphrases generated in {lexicon_seconds:.2f} s with the lexicon"
        f" alone, {generate_seconds:.2f} s with encoder synonyms"
    )
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    name = "synthetic_usefulness"
    if (args.sample_seed, args.seed) != (0, 0):
        name += f"_sample{args.sample_seed}_seed{args.seed}"
    if args.validation_split is not None:
        name += f"_validation{args.validation_split:g}"
    (out / f"{name}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
