"""Duplicate removal for generated text: exact, normalised and near duplicates, in bounded memory.

- exact: the same text;
- normalised: the same after lower-casing and dropping punctuation and extra spaces;
- near: sets of at least ``MIN_WORDS_FOR_NEAR`` distinct content words (``STOP_WORDS`` aside)
  that differ by one word added, removed or replaced, in any order: "please cancel my hotel
  booking for friday night" and "cancel the hotel booking for friday night please" are near
  duplicates.

Near duplicates are found with the symmetric-delete method (as in SymSpell), on word sets: a set
is keyed by the sum of its word hashes and by that sum less each word's hash; two sets within one
word of each other share a key. Keys seen live in Bloom filters (rbloom) sized from the expected
number of kept texts, so memory is bounded up front (about 3 bytes per key, 15 to 40 bytes per
kept text) instead of growing like a set of signatures. MinHash LSH was the other candidate: its
band keys collide for the many templated sentences that share half their words, so without
storing signatures to verify candidates (hundreds of MB for a million texts) it drops far too much.

Every hash is a fixed function of the text (xxHash), so the same input sequence gives the same
decisions in every process, which keeps generation reproducible.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import rbloom
import xxhash

MIN_WORDS_FOR_NEAR = 5
"""Distinct content words a text needs before one-word differences make it a near duplicate."""

# fmt: off
STOP_WORDS = frozenset((
    "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but", "by", "can",
    "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her", "him", "his",
    "how", "i", "i'm", "i've", "if", "in", "is", "it", "it's", "its", "me", "my", "of", "on",
    "or", "our", "she", "so", "that", "the", "their", "them", "then", "there", "they", "this",
    "to", "us", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will",
    "with", "would", "you", "your",
))
# fmt: on
"""Function words left out of near-duplicate word sets: they say little about the content."""

FALSE_POSITIVE_RATE = 1e-4
_TOKEN_CACHE_LIMIT = 200_000
_KEYS_PER_TEXT = 16

# Sentence punctuation, not the apostrophe ("don't" stays one word). Chained str.replace calls
# are several times faster than str.translate or a regular expression on short texts.
_PUNCTUATION = tuple(',.?!;:"()')


def normalized_words(text: str) -> list[str]:
    """The words of `text`, lower case, without punctuation."""
    text = text.lower()
    for char in _PUNCTUATION:
        if char in text:
            text = text.replace(char, " ")
    return text.split()


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, spacing collapsed: the key of normalised duplicates."""
    return " ".join(normalized_words(text))


@dataclasses.dataclass
class DuplicateCounts:
    """How many candidates each check removed."""

    exact: int = 0
    normalized: int = 0
    near: int = 0


class Deduplicator:
    """Keeps the first of each group of duplicate texts; remembers what it has kept."""

    def __init__(self, expected_items: int) -> None:
        capacity = max(1_000, expected_items)
        self._exact = rbloom.Bloom(capacity, FALSE_POSITIVE_RATE)
        self._normalized = rbloom.Bloom(capacity, FALSE_POSITIVE_RATE)
        self._near = rbloom.Bloom(capacity * _KEYS_PER_TEXT, FALSE_POSITIVE_RATE)
        self._token_hashes: dict[str, int] = {}
        self.counts = DuplicateCounts()

    def remember(self, text: str) -> None:
        """Count `text` as seen for exact and normalised duplicates (not near ones)."""
        self._exact.add(xxhash.xxh3_64_intdigest(text.encode()))
        normalized = " ".join(normalized_words(text))
        self._normalized.add(xxhash.xxh3_64_intdigest(normalized.encode()))

    def keep(self, texts: Sequence[str]) -> list[bool]:
        """For each text in order, whether it is new; the new ones are remembered."""
        return [self.keep_one(text) for text in texts]

    def keep_one(self, text: str) -> bool:
        """Whether `text` is new; if so it is remembered."""
        exact_key = xxhash.xxh3_64_intdigest(text.encode())
        if exact_key in self._exact:
            self.counts.exact += 1
            return False
        words = normalized_words(text)
        normalized_key = xxhash.xxh3_64_intdigest(" ".join(words).encode())
        if normalized_key in self._normalized:
            self.counts.normalized += 1
            return False
        near_keys = self._near_keys(words)
        near = self._near
        if near_keys and any(map(near.__contains__, near_keys)):
            self.counts.near += 1
            return False
        self._exact.add(exact_key)
        self._normalized.add(normalized_key)
        if near_keys:
            near.update(near_keys)
        return True

    def _near_keys(self, words: list[str]) -> list[int]:
        """The content-word set's key and its keys with one word left out (none if short)."""
        unique = set(words)
        unique -= STOP_WORDS
        if len(unique) < MIN_WORDS_FOR_NEAR:
            return []
        cache = self._token_hashes
        hashes = list(map(cache.get, unique))
        if None in hashes:
            if len(cache) > _TOKEN_CACHE_LIMIT:
                cache.clear()
            hashes = [self._word_hash(word) for word in unique]
        # Sums of 64-bit hashes: order-free set keys; Python ints never overflow.
        total = sum(hashes)
        return [total, *[total - value for value in hashes]]

    def _word_hash(self, word: str) -> int:
        value = self._token_hashes.get(word)
        if value is None:
            value = self._token_hashes[word] = xxhash.xxh3_64_intdigest(word.encode())
        return value
