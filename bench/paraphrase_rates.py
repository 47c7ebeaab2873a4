"""Tune paraphrase rates away from test.csv: paired comparisons on held-out training examples.

For each of several 10-per-intent Banking77 samples, every variant of the `paraphrases` rates
generates the same number of paraphrases (10 per example, seed = the sample's seed), a
supervised agent trains on sample + paraphrases (the engine in process, default settings, as the
service runs it), and all are scored on the same 4,000 training examples outside the sample.
Each variant is compared with the first one sample by sample (a paired difference: the samples'
own spread cancels out), so a change of a tenth of a point is visible over 20 samples.

Use it to compare changes to the rates in synthetic/textops.py: test.csv stays for the
usefulness figure (synthetic_usefulness.py), not for tuning. Not part of `make bench` (a
tuning tool, about 4 s per variant and sample on 2 cores).
Usage: python bench/paraphrase_rates.py [--samples 20] [--first-sample 100] [--difficulty medium]
    VARIANT [VARIANT ...]   where VARIANT is "current" or "field=value[;field=value]",
    e.g. current "synonyms=0.15" "typo=0.4;context=0.5" "variants=15" "encoder_synonyms=1"
    (encoder_synonyms=1 adds the pretrained encoder's synonyms, about 40 s more per sample)
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import tempfile
from pathlib import Path

from banking77 import DEFAULT_DATA, SilentReporter, accuracy_of, read_split
from few_shot import sample

from agent_training_server.engines.base import Example, TrainSettings
from agent_training_server.engines.supervised import SupervisedEngine, SupervisedPredictor
from agent_training_server.synthetic import textops
from agent_training_server.synthetic.plan import GenerationPlan, build
from agent_training_server.synthetic.sources import SourceExample

HELD_OUT = 4000
FIRST_SAMPLE_SEED = 100
"""Sample seeds start here, away from the usefulness benchmark's default sample (seed 0)."""

Texts = tuple[list[str], list[str]]
"""Texts and their labels, in the same order."""


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of paraphrasing: the rates, paraphrases per example, and encoder synonyms."""

    rates: textops.ParaphraseRates
    per_example: int = 10
    encoder_synonyms: bool = False


def held_out_accuracy(examples: list[Example], held_out: Texts) -> float:
    """Train supervised with default settings; accuracy on the held-out examples, in points."""
    with tempfile.TemporaryDirectory() as workdir:
        artifact = SupervisedEngine().train(
            examples, TrainSettings(), SilentReporter(), Path(workdir)
        )
    predictor = SupervisedPredictor(artifact.spec, artifact.tensors)
    best = predictor.predict_proba(held_out[0]).argmax(axis=1)
    return 100 * accuracy_of([artifact.outputs[index] for index in best], held_out[1])


def parse_variant(text: str, current: textops.ParaphraseRates) -> Variant:
    """The variant described by "current" or "field=value;field=value"."""
    if text == "current":
        return Variant(current)
    changes, variants, encoder = {}, 10, False
    for part in text.split(";"):
        field, _, value = part.partition("=")
        if field == "variants":
            variants = int(value)
        elif field == "encoder_synonyms":
            encoder = value not in ("0", "")
        elif field in {f.name for f in dataclasses.fields(current)}:
            changes[field] = float(value)
        else:
            names = ", ".join(f.name for f in dataclasses.fields(current))
            raise SystemExit(
                f"unknown rate {field!r}; rates are: {names}, variants and encoder_synonyms"
            )
    return Variant(dataclasses.replace(current, **changes), variants, encoder)


def split(train: Texts, sample_seed: int) -> tuple[Texts, Texts]:
    """The sample, and HELD_OUT training examples outside it (the same order for every variant)."""
    shots = sample(train, 10, sample_seed)
    chosen = set(shots[0])
    rest = [(text, label) for text, label in zip(*train, strict=True) if text not in chosen]
    random.Random(99).shuffle(rest)
    held_out = ([text for text, _ in rest[:HELD_OUT]], [label for _, label in rest[:HELD_OUT]])
    return shots, held_out


def augmented_accuracy(
    shots: Texts,
    held_out: Texts,
    difficulty: str,
    variants: int,
    seed: int,
    encoder_synonyms: bool = False,
) -> float:
    """Held-out accuracy of sample + its paraphrases under the rates now in textops."""
    sources = tuple(SourceExample(text, label) for text, label in zip(*shots, strict=True))
    plan = GenerationPlan(
        data_type="paraphrases",
        count=len(sources) * variants,
        difficulty=difficulty,
        seed=seed,
        source_examples=sources,
        encoder_synonyms=encoder_synonyms,
    )
    generated = [Example(s.input, s.label) for chunk in build(plan).chunks(10_000) for s in chunk]
    originals = [Example(text, label) for text, label in zip(*shots, strict=True)]
    return held_out_accuracy(originals + generated, held_out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help='"current" or "field=value[;field=value]"')
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument(
        "--first-sample", type=int, default=FIRST_SAMPLE_SEED, help="seed of the first sample"
    )
    parser.add_argument("--difficulty", default="medium", choices=("easy", "medium", "hard"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    current = textops.PARAPHRASE_RATES[args.difficulty]
    plans = [parse_variant(text, current) for text in args.variants]
    train = read_split(args.data / "train.csv")
    scores: list[list[float]] = [[] for _ in plans]
    for sample_seed in range(args.first_sample, args.first_sample + args.samples):
        shots, held_out = split(train, sample_seed)
        for index, variant in enumerate(plans):
            textops.PARAPHRASE_RATES[args.difficulty] = variant.rates
            try:
                accuracy = augmented_accuracy(
                    shots,
                    held_out,
                    args.difficulty,
                    variant.per_example,
                    sample_seed,
                    variant.encoder_synonyms,
                )
            finally:
                textops.PARAPHRASE_RATES[args.difficulty] = current
            scores[index].append(accuracy)
        print(sample_seed, " ".join(f"{s[-1]:.2f}" for s in scores), flush=True)
    print(f"{'variant':<36} {'held-out %':>10} {'vs first':>9} {'± s.e.':>7} {'better':>7}")
    for text, values in zip(args.variants, scores, strict=True):
        differences = [a - b for a, b in zip(values, scores[0], strict=True)]
        error = statistics.stdev(differences) / len(differences) ** 0.5 if len(values) > 1 else 0
        better = sum(d > 0 for d in differences)
        print(
            f"{text:<36} {statistics.mean(values):>10.2f} {statistics.mean(differences):>+9.2f}"
            f" {error:>7.2f} {better:>4}/{len(values)}"
        )


if __name__ == "__main__":
    main()
