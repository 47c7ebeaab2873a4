"""What a generation request asks for, validated, and how each data type is built from it."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

import numpy as np

from agent_training_server.synthetic import encoder_synonyms, sources
from agent_training_server.synthetic.grammar import parse_grammar
from agent_training_server.synthetic.pipeline import Accept, Finish, Generation, Source
from agent_training_server.synthetic.sources import (
    ConversationSource,
    ParaphraseSource,
    QuerySource,
    Sample,
    SourceExample,
)

DATA_TYPES = (
    "customer_queries",
    "conversations",
    "paraphrases",
    "out_of_scope",
    "feedback_logs",
    "templates",
)

# Which parameters each data type reads; any other parameter set is refused, listing these.
COMMON_PARAMETERS = ("difficulty", "seed")
MINING_PARAMETERS = ("target_agent_id", "min_confidence")
PARAMETERS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "customer_queries": ("topics", "label", *MINING_PARAMETERS),
    "conversations": ("topics", "label", "context_turns", *MINING_PARAMETERS),
    "paraphrases": (
        "source_examples",
        "dataset_id",
        "variants_per_example",
        "encoder_synonyms",
        *MINING_PARAMETERS,
    ),
    "out_of_scope": ("fallback_output",),
    "feedback_logs": (
        "agent_id",
        "topics",
        "label",
        "source_examples",
        "dataset_id",
        "exploration_rate",
    ),
    "templates": ("grammar", "label", *MINING_PARAMETERS),
}

DEFAULT_FALLBACK = "fallback"
DEFAULT_CONTEXT_TURNS = 2
DEFAULT_EXPLORATION_RATE = 0.2
DEFAULT_MIN_CONFIDENCE = 0.5

Scorer = Callable[[Sequence[str]], np.ndarray]
"""An agent version's scoring: probabilities of shape (len(texts), len(outputs))."""


@dataclasses.dataclass(frozen=True)
class Agent:
    """An agent version's repertoire and scoring, for mining and the user simulator."""

    outputs: Sequence[str]
    score: Scorer
    confidence_threshold: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationPlan:
    """A validated generation request."""

    data_type: str
    count: int
    difficulty: str = sources.MEDIUM
    topics: tuple[str, ...] = ()
    seed: int = 0
    label_by_response: bool = False
    grammar: str = ""
    source_examples: tuple[SourceExample, ...] = ()
    fallback_output: str = DEFAULT_FALLBACK
    context_turns: int = DEFAULT_CONTEXT_TURNS
    variants_per_example: int = 0
    exploration_rate: float = DEFAULT_EXPLORATION_RATE
    min_confidence: float | None = None
    encoder_synonyms: bool = False


def build(
    plan: GenerationPlan, *, answering: Agent | None = None, target: Agent | None = None
) -> Generation:
    """The Generation for `plan`; `answering` is feedback_logs' agent, `target` the mined one.

    Raises:
        GrammarError: the plan's grammar does not compile.
        EncoderUnavailable: encoder_synonyms asked for without the pretrained encoder installed.
    """
    source = make_source(plan)
    accept = _mining_filter(target, plan.min_confidence) if target else None
    finish = None
    if plan.data_type == "feedback_logs":
        assert answering is not None
        finish = _user_simulator(answering, plan.exploration_rate, random.Random(plan.seed + 1))
    seen = [example.input for example in plan.source_examples]
    return Generation(source, plan.count, accept=accept, finish=finish, seen=seen)


def make_source(plan: GenerationPlan) -> Source:
    """The candidate source of a plan (no agents needed: they act on candidates later)."""
    kind = plan.data_type
    seed = plan.seed
    if kind in ("paraphrases", "feedback_logs") and plan.source_examples:
        extra_synonyms = None
        if plan.encoder_synonyms:
            extra_synonyms = encoder_synonyms.find(
                [example.input.lower() for example in plan.source_examples]
            )
        paraphrases = ParaphraseSource(
            plan.source_examples, plan.difficulty, seed, plan.variants_per_example, extra_synonyms
        )
        if kind == "feedback_logs":
            return sources.SourceExampleQueries(paraphrases)
        return paraphrases
    if kind == "out_of_scope":
        grammar = sources.out_of_scope_grammar()
        query_source = QuerySource(
            {sources.OUT_OF_SCOPE_TOPIC: grammar},
            plan.difficulty,
            seed,
            fixed_label=plan.fallback_output,
        )
        query_source.generator = "out_of_scope"
        return query_source
    if kind == "templates":
        grammars = {sources.CUSTOM_TOPIC: parse_grammar(plan.grammar, plan.seed)}
    else:
        topics = sources.builtin_topics()
        grammars = {name: topics[name] for name in plan.topics or topics}
    queries = QuerySource(grammars, plan.difficulty, seed, plan.label_by_response)
    queries.generator = kind
    if kind == "conversations":
        return ConversationSource(queries, plan.context_turns, seed)
    return queries


def _mining_filter(target: Agent, min_confidence: float | None) -> Accept:
    """Keep what `target` gets wrong or answers with a confidence under the threshold."""
    threshold = min_confidence or target.confidence_threshold or DEFAULT_MIN_CONFIDENCE
    index = {output: position for position, output in enumerate(target.outputs)}

    def accept(samples: list[Sample]) -> list[bool]:
        probabilities = target.score([sample.input for sample in samples])
        best = probabilities.argmax(axis=1)
        confidence = probabilities.max(axis=1)
        return [
            index.get(sample.label, -1) != int(choice) or float(score) < threshold
            for sample, choice, score in zip(samples, best, confidence, strict=True)
        ]

    return accept


def _user_simulator(agent: Agent, exploration_rate: float, rng: random.Random) -> Finish:
    """The agent answers each query (epsilon-greedy); the user says whether it was right.

    The logged propensity is the probability with which the logging policy chose the output:
    (1 - epsilon) for its top output plus epsilon / K for any output, K outputs in all.
    """
    outputs = list(agent.outputs)
    uniform = exploration_rate / len(outputs)

    def finish(samples: list[Sample]) -> list[Sample]:
        probabilities = agent.score([sample.input for sample in samples])
        answered = []
        for sample, row in zip(samples, probabilities, strict=True):
            best = int(row.argmax())
            explored = rng.random() < exploration_rate
            chosen = int(rng.random() * len(outputs)) if explored else best
            propensity = uniform + (1.0 - exploration_rate if chosen == best else 0.0)
            output = outputs[chosen]
            feedback = "correct" if output == sample.label else "incorrect"
            answered.append(
                sample._replace(label=output, feedback=feedback, propensity=round(propensity, 6))
            )
        return answered

    return finish
