"""Duplicate removal for generated text: exact, normalised and near duplicates, in bounded memory.

- exact: the same text;
- normalised: the same after lower-casing and dropping punctuation and extra spaces;
- near: sets of at least ``MIN_WORDS_FOR_NEAR`` distinct content words (``STOP_WORDS`` aside)
  that differ by one word added, removed or replaced, in any order: "please cancel my hotel
  booking for friday night" and "cancel the hotel booking for friday night please" are near
  duplicates.

Near duplicates are found with the symmetric-delete method (as in SymSpell), on word sets: a set
is keyed by the sum of its word hashes and by that sum less each word's hash; two sets within one
word of each other share a key. Keys seen live in a blocked Bloom filter (numpy; each key's bits
in one 64-bit word, so one memory access per key) sized from the expected number of kept texts:
memory is bounded up front (24 bits per key, 42 bytes per expected text) instead of growing like
a set of signatures. MinHash LSH was the other candidate: its band keys collide for
the many templated sentences that share half their words, so without storing signatures to
verify candidates (hundreds of MB for a million texts) it drops far too much.

Texts are checked a batch at a time: the keys of a batch are computed and looked up with numpy,
and a text that shares a key with an earlier text of the same batch is a duplicate too. Every
hash is a fixed function of the text (xxHash, fixed multipliers), so the same input sequence
gives the same decisions in every process, which keeps generation reproducible.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import numpy as np
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

_TOKEN_CACHE_LIMIT = 200_000
_KEYS_PER_TEXT = 14

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


_BITS_PER_KEY = 24
_BITS_SET_PER_KEY = 6
_MIX_WORD = np.uint64(0x9E3779B97F4A7C15)
_MIX_BITS = np.uint64(0xC2B2AE3D27D4EB4F)
# Keys of the three checks live in one filter; a tag keeps their spaces apart.
_EXACT_TAG = np.uint64(0x5BD1E9955BD1E995)
_NORMALIZED_TAG = np.uint64(0x27D4EB2F165667C5)


class BlockedBloomFilter:
    """A Bloom filter of uint64 keys whose bits for one key all lie in one 64-bit word.

    One memory access per key and whole-array numpy operations per batch, at the price of a
    higher false-positive rate than a classic Bloom filter of the same size: about 1e-3 per
    lookup at 24 bits per key (tests/synthetic measures it), so about 1% of new texts are
    wrongly taken for duplicates and replaced by the next candidate.
    """

    def __init__(self, capacity: int) -> None:
        words = max(1024, -(-capacity * _BITS_PER_KEY // 64))
        self._words = np.zeros(words, dtype=np.uint64)
        self._count = np.uint64(words)

    @property
    def nbytes(self) -> int:
        """Memory held by the filter."""
        return self._words.nbytes

    def locate(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each key's word and the mask of its bits in that word."""
        with np.errstate(over="ignore"):
            # Multiply-shift onto [0, words): the top 32 bits of the mixed key times the size.
            word = ((((keys * _MIX_WORD) >> np.uint64(32)) * self._count) >> np.uint64(32)).astype(
                np.intp
            )
            bits = keys * _MIX_BITS
        bits ^= bits >> np.uint64(31)
        mask = np.zeros(len(keys), dtype=np.uint64)
        for i in range(_BITS_SET_PER_KEY):
            mask |= np.uint64(1) << ((bits >> np.uint64(6 * i)) & np.uint64(63))
        return word, mask

    def contains(self, located: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """For each located key, whether it may have been added (false positives are rare)."""
        word, mask = located
        return (self._words[word] & mask) == mask

    def add(self, located: tuple[np.ndarray, np.ndarray]) -> None:
        """Add located keys (several may share a word)."""
        word, mask = located
        np.bitwise_or.at(self._words, word, mask)


class Deduplicator:
    """Keeps the first of each group of duplicate texts; remembers what it has kept."""

    def __init__(self, expected_items: int) -> None:
        capacity = max(1_000, expected_items)
        self._filter = BlockedBloomFilter(capacity * _KEYS_PER_TEXT)
        self._token_hashes: dict[str, int] = {}
        self.counts = DuplicateCounts()

    def remember(self, text: str) -> None:
        """Count `text` as seen for exact and normalised duplicates (not near ones)."""
        exact, normalized, _near = self._keys([text])
        self._filter.add(self._filter.locate(np.concatenate([exact, normalized])))

    def keep_one(self, text: str) -> bool:
        """Whether `text` is new; if so it is remembered."""
        return self.keep([text])[0]

    def keep(self, texts: Sequence[str]) -> list[bool]:
        """For each text in order, whether it is new; the new ones are remembered."""
        count = len(texts)
        exact, normalized, (near, near_owner) = self._keys(texts)
        keys = np.concatenate([exact, normalized, near])
        owner = np.concatenate([np.arange(count), np.arange(count), near_owner])
        located = self._filter.locate(keys)
        seen = self._filter.contains(located)
        # A key shared with an earlier text of this batch counts as seen too.
        _unique, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        seen |= owner[first[inverse]] < owner
        near_seen = np.zeros(count, dtype=bool)
        near_seen[near_owner[seen[2 * count :]]] = True
        kind = np.where(
            seen[:count], 0, np.where(seen[count : 2 * count], 1, np.where(near_seen, 2, 3))
        )
        self.counts.exact += int(np.count_nonzero(kind == 0))
        self.counts.normalized += int(np.count_nonzero(kind == 1))
        self.counts.near += int(np.count_nonzero(kind == 2))
        kept = kind == 3
        keep_key = kept[owner]
        self._filter.add((located[0][keep_key], located[1][keep_key]))
        return kept.tolist()

    def _keys(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Exact keys, normalised keys, and near keys with the index of their text."""
        digest = xxhash.xxh3_64_intdigest
        exact = np.array([digest(text.encode()) for text in texts], dtype=np.uint64)
        word_lists = [normalized_words(text) for text in texts]
        normalized = np.array(
            [digest(" ".join(words).encode()) for words in word_lists], dtype=np.uint64
        )
        hash_lists = [self._content_hashes(words) for words in word_lists]
        lengths = np.array([len(values) for values in hash_lists], dtype=np.intp)
        hashes = np.array(list(itertools.chain.from_iterable(hash_lists)), dtype=np.uint64)
        return exact ^ _EXACT_TAG, normalized ^ _NORMALIZED_TAG, _near_keys(hashes, lengths)

    def _content_hashes(self, words: list[str]) -> list[int]:
        """Hashes of the distinct content words; none when there are too few to compare."""
        unique = set(words)
        unique -= STOP_WORDS
        if len(unique) < MIN_WORDS_FOR_NEAR:
            return []
        cache = self._token_hashes
        hashes = list(map(cache.get, unique))
        if None in hashes:
            if len(cache) > _TOKEN_CACHE_LIMIT:
                cache.clear()
            hashes = [
                cache.setdefault(word, xxhash.xxh3_64_intdigest(word.encode())) for word in unique
            ]
        return hashes


def _near_keys(hashes: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each word set's key (the sum of its word hashes) and the sum less each word's hash.

    Returns the keys and, for each, the index of its text.
    """
    texts = np.arange(len(lengths))
    has_words = lengths > 0
    if not has_words.any():
        return np.zeros(0, np.uint64), np.zeros(0, np.intp)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[has_words]
    with np.errstate(over="ignore"):
        totals = np.add.reduceat(hashes, starts, dtype=np.uint64)
        deletions = np.repeat(totals, lengths[has_words]) - hashes
    keys = np.concatenate([totals, deletions])
    owners = np.concatenate([texts[has_words], np.repeat(texts, lengths)])
    return keys, owners
