"""Word-form variation for paraphrases: a noun or verb swapped for another inflection of itself.

A query says the same thing whether it reads "charged" or "charges", "card" or "cards", but a
model trained on a handful of examples sees different features. Rewriting content words into
their other inflections (from lemminflect's English tables, shipped inside that package: no
download) teaches it that the word, not the form, carries the intent. Measured on a 10-examples-
per-intent Banking77 sample, this was the paraphrasing operation that helped most.

Only nouns and verbs are inflected, and function words, auxiliaries and politeness words never
(``please`` -> ``pleases`` would change the tone, ``was`` -> ``were`` only the grammar).
"""

from __future__ import annotations

import functools
import random
from types import ModuleType

_INFLECTED_PARTS_OF_SPEECH = ("NOUN", "VERB")
_MIN_LENGTH = 3

# Words whose other forms add no information or read as mistakes of another kind.
_FIXED_FORM_WORDS = """
    am is are was were be been being have has had having do does did doing done
    will would shall should can could may might must need ought let lets
    i me my mine we us our you your he him his she her it its they them their
    this that these those there here what which who whom whose when where why how
    a an the and or but if so not no yes to of in on at by for from with as up out
    please thank thanks like mind hello hi hey ok okay sorry wonder
"""
KEPT_AS_THEY_ARE = frozenset(_FIXED_FORM_WORDS.split())
"""Function, auxiliary and politeness words: their form, and their choice, is grammar or tone."""

_CACHE_SIZE = 65_536


@functools.cache
def _inflections() -> ModuleType:
    """lemminflect, imported on first use.

    Its import and tables cost about a second, which servers that never paraphrase (and
    customer_queries generation) should not pay.
    """
    import lemminflect

    return lemminflect


@functools.lru_cache(maxsize=_CACHE_SIZE)
def other_forms(word: str) -> tuple[str, ...]:
    """The other inflections of a lower-case noun or verb, sorted; empty for any other word.

    A word that is both (``charge``) gets the forms of both: ``charges``, ``charged``,
    ``charging``. Sorted so that a seeded choice among them is the same in every process.
    """
    if len(word) < _MIN_LENGTH or not word.isalpha() or word in KEPT_AS_THEY_ARE:
        return ()
    tables = _inflections()
    forms: set[str] = set()
    for part_of_speech, lemmas in tables.getAllLemmas(word).items():
        if part_of_speech not in _INFLECTED_PARTS_OF_SPEECH:
            continue
        for lemma in lemmas:
            for inflections in tables.getAllInflections(lemma, upos=part_of_speech).values():
                forms.update(inflections)
    forms.discard(word)
    return tuple(sorted(form for form in forms if form.isalpha()))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def base_forms(word: str) -> frozenset[str]:
    """The word and its lemmas under every part of speech (``charged`` -> charge, charged)."""
    forms = {word}
    for lemmas in _inflections().getAllLemmas(word).values():
        forms.update(lemmas)
    return frozenset(forms)


def vary_word_forms(text: str, rng: random.Random, rate: float) -> str:
    """Replace each noun or verb of `text` by another of its forms with probability `rate`."""
    words = text.split()
    rnd = rng.random
    changed = False
    for index, word in enumerate(words):
        # A word carrying sentence punctuation ("cards?") keeps it after the change.
        core = word.rstrip(",.?!")
        forms = other_forms(core)
        if forms and rnd() < rate:
            words[index] = forms[int(rnd() * len(forms))] + word[len(core) :]
            changed = True
    return " ".join(words) if changed else text
