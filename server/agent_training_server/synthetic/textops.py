"""Rewriting a query: difficulty styling, synonym substitution, rewording, word edits and typos.

Every function takes the caller's `random.Random`, so a seed fixes every choice. They are on the
hot path of generation (millions of calls), hence the plain loops and pre-built tables.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence

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


def substitute_synonyms(text: str, rng: random.Random, rate: float) -> str:
    """Replace each lexicon word or word pair with a synonym with probability `rate`."""
    words = text.split()
    rnd = rng.random
    single, pairs, pair_starts = _SINGLE_WORD_SYNONYMS, _TWO_WORD_SYNONYMS, _PAIR_FIRST_WORDS
    out: list[str] = []
    index, count = 0, len(words)
    while index < count:
        word = words[index]
        if word in pair_starts and index + 1 < count:
            options = pairs.get(word + " " + words[index + 1])
            if options is not None and rnd() < rate:
                out.append(pick(rnd, options))
                index += 2
                continue
        options = single.get(word)
        mark = ""
        if options is None and word[-1] in ",.?!":
            # A word carrying sentence punctuation ("card?"): look it up without it.
            options, mark = single.get(word[:-1]), word[-1]
        if options is not None and rnd() < rate:
            out.append(pick(rnd, options) + mark)
        else:
            out.append(word)
        index += 1
    return " ".join(out)


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
    """One word-level edit: drop a word, swap two neighbours or repeat a synonym of a word."""
    words = text.split()
    if len(words) < 4:
        return text
    rnd = rng.random
    index = int(rnd() * (len(words) - 1))
    kind = int(rnd() * 3)
    if kind == 0:
        del words[index]
    elif kind == 1:
        words[index], words[index + 1] = words[index + 1], words[index]
    else:
        options = _SINGLE_WORD_SYNONYMS.get(words[index])
        if options is None:
            del words[index]
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


def style_easy(core: str, rng: random.Random) -> str:
    """Easy: the direct query, as a customer would type it in one line."""
    return sentence_case(core, is_question(core)) if rng.random() < 0.5 else core


def style_medium(core: str, rng: random.Random) -> str:
    """Medium: paraphrase, politeness, filler and context around the query."""
    rnd = rng.random
    query = substitute_synonyms(core, rng, 0.2)
    if rnd() < 0.3:
        query = reword(query, rng)
    parts: list[str] = []
    decorated = False
    if rnd() < 0.35:
        parts.append(pick(rnd, styles.CONTEXT_SENTENCES))
        decorated = True
    opener = []
    if rnd() < 0.45:
        opener.append(pick(rnd, styles.GREETINGS) + ",")
    if rnd() < 0.45:
        opener.append(pick(rnd, styles.POLITE_OPENERS) + ",")
    elif rnd() < 0.35:
        opener.append(pick(rnd, styles.FILLERS))
    decorated = decorated or bool(opener)
    closing = ""
    if rnd() < 0.4 or not decorated:
        # After a question mark a closing reads as its own phrase: "...again? thanks".
        separator = " " if query.endswith("?") else ", "
        closing = separator + pick(rnd, styles.CLOSINGS)
    parts.append(" ".join([*opener, query]) + closing)
    return " ".join(parts)


def style_hard(core: str, rng: random.Random, topic: str, other_topics: Sequence[str]) -> str:
    """Hard: typos, indirect phrasing, several sentences, negation and distractor topics."""
    rnd = rng.random
    query = substitute_synonyms(core, rng, 0.3)
    if rnd() < 0.5:
        query = reword(query, rng)
    query = query.rstrip("?")
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


def paraphrase(text: str, rng: random.Random, operations: int) -> str:
    """Apply `operations` label-keeping rewrites: synonyms, rewording, word edits, typos."""
    rnd = rng.random
    result = text.lower()
    for _ in range(operations):
        kind = int(rnd() * 5)
        if kind == 0:
            result = substitute_synonyms(result, rng, 0.35)
        elif kind == 1:
            rewritten = reword(result, rng)
            result = rewritten if rewritten != result else substitute_synonyms(result, rng, 0.35)
        elif kind == 2:
            result = edit_words(result, rng)
        elif kind == 3:
            result = add_typos(result, rng, 1)
        else:
            result = pick(rnd, styles.POLITE_OPENERS) + ", " + result
    return result
