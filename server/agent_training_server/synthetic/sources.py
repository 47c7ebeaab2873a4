"""Candidate sources: one per data type, each making one candidate example for a balance unit.

A source lists its balance `units` (intents, or labels for paraphrases) and makes a candidate
for a unit on request; the pipeline (pipeline.py) does the round-robin, duplicate removal and
counting. Each unit draws from its own seeded random stream, so a unit's n-th candidate is the
same however the units' requests interleave: candidates can be made ahead, in another process,
and the output stays byte-identical for a seed.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from agent_training_server.synthetic import textops
from agent_training_server.synthetic.catalog import styles, topics
from agent_training_server.synthetic.grammar import Grammar, Intent, parse_grammar
from agent_training_server.synthetic.textops import pick

EASY, MEDIUM, HARD = "easy", "medium", "hard"
DIFFICULTIES = (EASY, MEDIUM, HARD)
OUT_OF_SCOPE_TOPIC = "out_of_scope"
CUSTOM_TOPIC = "custom"


class Sample(NamedTuple):
    """One generated example with its metadata."""

    input: str
    label: str
    topic: str
    intent: str
    context: tuple[str, ...] = ()
    feedback: str = ""
    propensity: float | None = None


class SourceExample(NamedTuple):
    """An example given to rewrite (paraphrases) or to answer (feedback_logs)."""

    input: str
    label: str
    context: tuple[str, ...] = ()
    feedback: str = ""
    topic: str = ""


class UnitStreams:
    """One seeded `random.Random` per unit, made on first use."""

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._streams: dict[int, random.Random] = {}

    def __getitem__(self, unit: int) -> random.Random:
        stream = self._streams.get(unit)
        if stream is None:
            # A str seed is hashed with SHA-512: stable across processes and Python versions.
            stream = self._streams[unit] = random.Random(f"{self._seed}/{unit}")
        return stream


class CandidateSource:
    """Base of the sources: `candidates` in terms of `candidate`, one at a time."""

    units: Sequence[str]

    def candidate(self, unit: int) -> Sample:
        """One candidate example for `unit`."""
        raise NotImplementedError

    def candidates(self, unit: int, count: int) -> list[Sample]:
        """The next `count` candidate examples for `unit`."""
        candidate = self.candidate
        return [candidate(unit) for _ in range(count)]


@functools.cache
def builtin_topics() -> dict[str, Grammar]:
    """The built-in topics, compiled once per process (seed 0, so every process agrees)."""
    grammars = {
        name: parse_grammar(topics.COMMON_GRAMMAR + "\n" + text)
        for name, text in topics.TOPIC_GRAMMARS.items()
    }
    for grammar in grammars.values():
        _prepare_styling(grammar)
    return grammars


@functools.cache
def out_of_scope_grammar() -> Grammar:
    """The built-in out-of-scope themes, compiled once per process."""
    grammar = parse_grammar(topics.COMMON_GRAMMAR + "\n" + topics.OUT_OF_SCOPE_GRAMMAR)
    _prepare_styling(grammar)
    return grammar


def _prepare_styling(grammar: Grammar) -> None:
    """Prepare every sentence for styling now, as part of compiling the catalog.

    Otherwise the first generations of a process pay for it example by example (a few seconds'
    worth of examples for the 18,000 built-in sentences).
    """
    for intent in grammar.intents:
        for sentence in intent.sentences:
            textops.prepare_query(sentence)


class QuerySource(CandidateSource):
    """Queries from grammar intents, styled by difficulty (customer_queries, templates)."""

    generator = "customer_queries"

    def __init__(
        self,
        grammars: dict[str, Grammar],
        difficulty: str,
        seed: int,
        label_by_response: bool = False,
        fixed_label: str = "",
    ) -> None:
        self._entries: list[tuple[str, Intent]] = [
            (topic, intent) for topic, grammar in grammars.items() for intent in grammar.intents
        ]
        self.units = [intent.name for _topic, intent in self._entries]
        self._difficulty = difficulty
        self._streams = UnitStreams(seed)
        self._label_by_response = label_by_response
        self._fixed_label = fixed_label
        self._other_topics = {
            topic: [other for other in styles.DISTRACTORS if other != topic] for topic in grammars
        }

    def label(self, intent: Intent) -> str:
        """What a query of `intent` is labelled with."""
        if self._fixed_label:
            return self._fixed_label
        if self._label_by_response and intent.response:
            return intent.response
        return intent.name

    def query(self, unit: int, rng: random.Random) -> tuple[str, str, Intent]:
        """A styled query for `unit`, drawn from `rng`: (text, topic, intent)."""
        topic, intent = self._entries[unit]
        core = pick(rng.random, intent.sentences)
        if self._difficulty == EASY:
            text = textops.style_easy(core, rng)
        elif self._difficulty == MEDIUM:
            text = textops.style_medium(core, rng)
        else:
            text = textops.style_hard(core, rng, topic, self._other_topics[topic])
        return text, topic, intent

    def candidate(self, unit: int) -> Sample:
        """One candidate example for `unit`."""
        text, topic, intent = self.query(unit, self._streams[unit])
        return Sample(text, self.label(intent), topic, intent.name)

    def candidates(self, unit: int, count: int) -> list[Sample]:
        """The next `count` candidates for `unit`: the same as `count` calls of `candidate`.

        The hot path of generation: the lookups that do not change within a unit are done once.
        """
        topic, intent = self._entries[unit]
        rng = self._streams[unit]
        rnd = rng.random
        sentences = intent.sentences
        size = len(sentences)
        # What follows the text in every Sample of this unit (context, feedback, propensity too).
        rest = (self.label(intent), topic, intent.name, (), "", None)
        if self._difficulty == HARD:
            others = self._other_topics[topic]
            texts = [
                textops.style_hard(sentences[int(rnd() * size)], rng, topic, others)
                for _ in range(count)
            ]
        else:
            style = textops.style_easy if self._difficulty == EASY else textops.style_medium
            texts = [style(sentences[int(rnd() * size)], rng) for _ in range(count)]
        # tuple.__new__ skips NamedTuple's Python-level constructor (a third of a microsecond).
        return [tuple.__new__(Sample, (text, *rest)) for text in texts]


class ConversationSource(CandidateSource):
    """Earlier turns as context and the user's last turn as input (conversations)."""

    generator = "conversations"

    def __init__(self, queries: QuerySource, context_turns: int, seed: int) -> None:
        self._queries = queries
        self.units = queries.units
        self._turns = context_turns
        self._streams = UnitStreams(seed)

    def candidate(self, unit: int) -> Sample:
        """One conversation whose last user turn belongs to `unit`."""
        rng = self._streams[unit]
        rnd = rng.random
        turns = [pick(rnd, styles.CONVERSATION_OPENERS), pick(rnd, styles.AGENT_ACKNOWLEDGEMENTS)]
        while len(turns) < self._turns:
            # An earlier, different request and the agent's answer to it.
            other = int(rnd() * len(self.units))
            text, _topic, intent = self._queries.query(other, rng)
            turns += [text, intent.response or "Done, is there anything else?"]
        context = tuple(turns[len(turns) - self._turns :])
        text, topic, intent = self._queries.query(unit, rng)
        if len(context) > 2 or rnd() < 0.5:
            text = pick(rnd, styles.FOLLOW_UP_FRAMES).format(q=text[:1].lower() + text[1:])
        return Sample(text, self._queries.label(intent), topic, intent.name, context)


class ParaphraseSource(CandidateSource):
    """Label-keeping rewrites of given examples (paraphrases)."""

    generator = "paraphrases"

    def __init__(
        self,
        examples: Sequence[SourceExample],
        difficulty: str,
        seed: int,
        variants_per_example: int = 0,
        extra_synonyms: Mapping[str, Mapping[int, tuple[str, ...]]] | None = None,
    ) -> None:
        """Rewrites of `examples`, `variants_per_example` at a time (0: spread evenly).

        `extra_synonyms` are synonyms beyond the lexicon, by lower-case source text and word
        index (encoder_synonyms.find).
        """
        self._synonyms = {
            text: textops.synonym_hits_with(text, extra)
            for text, extra in (extra_synonyms or {}).items()
            if extra
        }
        by_label: dict[str, list[SourceExample]] = {}
        for example in examples:
            by_label.setdefault(example.label, []).append(example)
        self.units = list(by_label)
        self._examples = [by_label[label] for label in self.units]
        self._next = [0] * len(self.units)
        self._rates = textops.PARAPHRASE_RATES[difficulty]
        self._variants = max(1, variants_per_example)
        self._streams = UnitStreams(seed)

    def candidate(self, unit: int) -> Sample:
        """A rewrite of the next source example of label `unit`."""
        examples = self._examples[unit]
        turn = self._next[unit]
        self._next[unit] = turn + 1
        source = examples[(turn // self._variants) % len(examples)]
        synonyms = self._synonyms.get(source.input.lower()) if self._synonyms else None
        text = textops.paraphrase(source.input, self._streams[unit], self._rates, synonyms)
        return Sample(
            text, source.label, source.topic, source.label, source.context, source.feedback
        )


class SourceExampleQueries(CandidateSource):
    """Given examples as the queries a simulated user asks (feedback_logs from a dataset)."""

    generator = "feedback_logs"

    def __init__(self, paraphrases: ParaphraseSource) -> None:
        self._paraphrases = paraphrases
        self.units = paraphrases.units

    def candidate(self, unit: int) -> Sample:
        """A rewrite of a source example, asked by the simulated user."""
        return self._paraphrases.candidate(unit)
