"""Synonyms beyond the lexicon, found by the pretrained sentence encoder and checked in context.

The shipped lexicon knows the words of the customer messages it was written for; the other words
of a user's examples get no synonyms from it. all-MiniLM-L6-v2 (the few_shot engine's encoder)
knows far more words, in two steps:

1. Neighbours: every whole word of the encoder's vocabulary (about 22,000) is embedded once per
   process; a word's candidates are its nearest words above `NEIGHBOUR_SIMILARITY`, less its own
   other forms (word forms are their own operation), function words and the words a bank tells
   apart (lexicon.TOLD_APART). These are related words, not yet synonyms: `small` -> `large`.
2. Context: each candidate replaces its word in the source sentence, and is kept for that source
   only if the rewritten sentence stays within `CONTEXT_SIMILARITY` of the source's embedding.

With 10 Banking77 examples per intent, paraphrases with these synonyms trained a supervised
agent 0.3 points better than the lexicon's alone on held-out training examples and 0.5 to 0.7
better on the test set (the README has the figures). The cost is the encoder's: about 20
candidate sentences embedded per source, some 40 seconds for 770 sources on 2 cores, so it is a
parameter (`encoder_synonyms`) and not the default. Results are cached per source text for the
life of the process.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Mapping, Sequence

from agent_training_server.synthetic import wordforms
from agent_training_server.synthetic.catalog import lexicon

NEIGHBOUR_SIMILARITY = 0.6
"""Cosine between two words' embeddings for one to be a candidate for the other."""
NEIGHBOURS_PER_WORD = 15
"""Nearest words looked at per word (before the filters)."""
CONTEXT_SIMILARITY = 0.9
"""Cosine between a source and its rewrite for the candidate to be kept in that source."""
MIN_WORD_LENGTH = 3
TEXTS_PER_PASS = 1_000
"""Sources whose rewrites are embedded together: about 20,000 rewrites, some 30 MB of vectors."""
_WHOLE_WORD = re.compile(r"[a-z]{2,}")
_NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "mis")
_STEM = 4
"""Letters two words share at the start when one is a form or a negation of the other."""


def _opposites() -> dict[str, frozenset[str]]:
    pairs: dict[str, set[str]] = {}
    for one, other in lexicon.OPPOSITES:
        pairs.setdefault(one, set()).add(other)
        pairs.setdefault(other, set()).add(one)
    return {word: frozenset(others) for word, others in pairs.items()}


_OPPOSITE = _opposites()


def _same_stem(word: str, other: str) -> bool:
    """Whether `other` is a form (``charged``) or a negation (``uncharged``) of `word`."""
    if word[:_STEM] == other[:_STEM]:
        return True
    for longer, shorter in ((word, other), (other, word)):
        for prefix in _NEGATING_PREFIXES:
            if longer.startswith(prefix) and longer[len(prefix) :][:_STEM] == shorter[:_STEM]:
                return True
    return False


def _opposite(own_forms: frozenset[str], other: str) -> bool:
    """Whether `other` is, or comes from, an opposite of the word (``wrong``/``correctly``)."""
    return any(
        opposite[:_STEM] == other[:_STEM]
        for form in own_forms
        for opposite in _OPPOSITE.get(form, frozenset())
    )


_CACHE_LIMIT = 100_000

WordSynonyms = dict[int, tuple[str, ...]]
"""Synonyms of a sentence's words by word index (in the lower-case text split on spaces)."""


class _Neighbours:
    """The encoder and the embeddings of its vocabulary's whole words, made on first use."""

    def __init__(self) -> None:
        from agent_training_server.engines.pretrained import SentenceEncoder

        self.encoder = SentenceEncoder()
        self.words = sorted(
            word for word in self.encoder.tokenizer.get_vocab() if _WHOLE_WORD.fullmatch(word)
        )
        self.index = {word: position for position, word in enumerate(self.words)}
        self.vectors = self.encoder.embed(self.words, batch_size=256)
        self._candidates: dict[str, tuple[str, ...]] = {}

    def candidates(self, word: str) -> tuple[str, ...]:
        """The nearest words that could stand in for `word`, most similar first.

        Cached for the vocabulary's words only, so the cache stays bounded whatever words
        requests bring.
        """
        position = self.index.get(word)
        if position is None:
            return ()
        found = self._candidates.get(word)
        if found is None:
            found = self._candidates[word] = self._find(word, position)
        return found

    def _find(self, word: str, position: int) -> tuple[str, ...]:
        own_forms = wordforms.base_forms(word)
        if (
            len(word) < MIN_WORD_LENGTH
            or word in wordforms.KEPT_AS_THEY_ARE
            or own_forms & lexicon.TOLD_APART
        ):
            return ()
        similarities = self.vectors @ self.vectors[position]
        values, positions = similarities.topk(NEIGHBOURS_PER_WORD + 1)
        kept = []
        for similarity, other_position in zip(values.tolist(), positions.tolist(), strict=True):
            other = self.words[other_position]
            if similarity < NEIGHBOUR_SIMILARITY or other == word or len(other) < MIN_WORD_LENGTH:
                continue
            other_forms = wordforms.base_forms(other)
            if other_forms & own_forms or _same_stem(word, other):
                continue
            if other_forms & lexicon.TOLD_APART or other in wordforms.KEPT_AS_THEY_ARE:
                continue
            if _opposite(own_forms, other):
                continue
            kept.append(other)
        return tuple(kept)


@functools.cache
def _neighbours() -> _Neighbours:
    return _Neighbours()


_LOCK = threading.Lock()
_FOUND: dict[str, WordSynonyms] = {}


class EncoderBusy(RuntimeError):
    """Another request's encoder synonyms are being found."""


def find(texts: Sequence[str]) -> Mapping[str, WordSynonyms]:
    """Encoder synonyms of each lower-case text's words, checked in that text.

    One request at a time: a lookup holds the encoder (and both cores) for tens of seconds, and
    requests queued behind it would each hold a server thread meanwhile.

    Raises:
        EncoderUnavailable: the pretrained encoder's package is not installed.
        EncoderBusy: another lookup is running.
    """
    if not _LOCK.acquire(blocking=False):
        raise EncoderBusy("another request's encoder synonyms are being found")
    try:
        missing = sorted({text for text in texts if text not in _FOUND})
        if missing:
            if len(_FOUND) + len(missing) > _CACHE_LIMIT:
                _FOUND.clear()
            for start in range(0, len(missing), TEXTS_PER_PASS):
                part = missing[start : start + TEXTS_PER_PASS]
                _FOUND.update(_check_in_context(part, _neighbours()))
        return {text: _FOUND[text] for text in texts}
    finally:
        _LOCK.release()


def _check_in_context(texts: list[str], neighbours: _Neighbours) -> dict[str, WordSynonyms]:
    rewrites: list[tuple[int, int, str]] = []  # (text, word index, candidate)
    rewritten: list[str] = []
    for text_number, text in enumerate(texts):
        words = text.split()
        for index, word in enumerate(words):
            core = word.rstrip(",.?!")
            for candidate in neighbours.candidates(core):
                changed = list(words)
                changed[index] = candidate + word[len(core) :]
                rewrites.append((text_number, index, candidate))
                rewritten.append(" ".join(changed))
    found: dict[str, WordSynonyms] = {text: {} for text in texts}
    if not rewrites:
        return found
    originals = neighbours.encoder.embed(texts, batch_size=256)
    embedded = neighbours.encoder.embed(rewritten, batch_size=256)
    # Both are unit vectors: the row-wise dot product is the cosine.
    sources_of = [text_number for text_number, _index, _candidate in rewrites]
    similarities = (embedded * originals[sources_of]).sum(dim=1).tolist()
    for (text_number, index, candidate), similarity in zip(rewrites, similarities, strict=True):
        if similarity >= CONTEXT_SIMILARITY:
            synonyms = found[texts[text_number]]
            synonyms[index] = (*synonyms.get(index, ()), candidate)
    return found
