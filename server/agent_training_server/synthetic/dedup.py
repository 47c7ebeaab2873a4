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
memory is bounded by the count (24 bits per key, 42 bytes per expected text) instead of growing
like a set of signatures. MinHash LSH was the other candidate: its band keys collide for
the many templated sentences that share half their words, so without storing signatures to
verify candidates (hundreds of MB for a million texts) it drops far too much.

A large generation does not take its whole filter at the start: a stream whose client does not
read pauses after a few chunks, and must not hold 420 MB for the ten million examples it asked
for. Its first ``FIRST_STAGE_TEXTS`` texts go to a small first filter (11 MB); the filter for the
rest is made only once they are kept, that is once the client has read that far. The first
filter has twice the bits per key, so the two together wrongly take about as many texts for
duplicates as one filter of the full size (8.8e-5 + 7.8e-4 per lookup against 7.8e-4). A Bloom
filter cannot be resized (its keys are not kept), which is why the second one is separate.

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

FIRST_STAGE_TEXTS = 1 << 17
"""Texts a generation keeps before the filter for the rest of its count is made. More than an
unread stream makes: four chunks of at most 10,000 wait for it, and the HTTP/2 window holds a few
MB."""

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
_FIRST_STAGE_BITS_PER_KEY = 48
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

    def __init__(self, capacity: int, bits_per_key: int = _BITS_PER_KEY) -> None:
        words = max(1024, -(-capacity * bits_per_key // 64))
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


class StagedFilter:
    """The filter of one generation: one of its full size, or a small first stage and the rest.

    Up to ``FIRST_STAGE_TEXTS`` expected texts, one filter of that size. Beyond, a first filter
    for ``FIRST_STAGE_TEXTS`` texts (at twice the bits per key), and the filter for the others
    made once that many are kept (see the module docstring). A key is seen when either has it;
    new keys go to the newest.
    """

    def __init__(self, expected_texts: int) -> None:
        expected_texts = max(1_000, expected_texts)
        if expected_texts <= FIRST_STAGE_TEXTS:
            self._stages = [BlockedBloomFilter(expected_texts * _KEYS_PER_TEXT)]
            self._rest = 0
        else:
            first = BlockedBloomFilter(
                FIRST_STAGE_TEXTS * _KEYS_PER_TEXT, bits_per_key=_FIRST_STAGE_BITS_PER_KEY
            )
            self._stages = [first]
            self._rest = expected_texts - FIRST_STAGE_TEXTS
        self._texts = 0

    @property
    def nbytes(self) -> int:
        """Memory held by the filters made so far."""
        return sum(stage.nbytes for stage in self._stages)

    def contains(self, keys: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """For each key, whether it may have been added; and the keys located in the newest."""
        located = [stage.locate(keys) for stage in self._stages]
        seen = self._stages[0].contains(located[0])
        for stage, where in zip(self._stages[1:], located[1:], strict=True):
            seen |= stage.contains(where)
        return seen, located[-1]

    def add(self, located: tuple[np.ndarray, np.ndarray], texts: int) -> None:
        """Add keys located in the newest filter, those of `texts` kept texts."""
        self._stages[-1].add(located)
        self._texts += texts
        if self._rest and self._texts >= FIRST_STAGE_TEXTS:
            # Between batches, so which texts the first stage holds depends only on the input.
            self._stages.append(BlockedBloomFilter(self._rest * _KEYS_PER_TEXT))
            self._rest = 0


class Deduplicator:
    """Keeps the first of each group of duplicate texts; remembers what it has kept."""

    def __init__(self, expected_items: int) -> None:
        self._filter = StagedFilter(expected_items)
        self._word_hashes = _WordHashes()
        self.counts = DuplicateCounts()

    @property
    def nbytes(self) -> int:
        """Memory held by the duplicate filter (the word-hash cache aside)."""
        return self._filter.nbytes

    def remember(self, text: str) -> None:
        """Count `text` as seen for exact and normalised duplicates (not near ones)."""
        exact, normalized, _near = self._keys([text])
        _seen, located = self._filter.contains(np.concatenate([exact, normalized]))
        self._filter.add(located, 1)

    def keep_one(self, text: str) -> bool:
        """Whether `text` is new; if so it is remembered."""
        return self.keep([text])[0]

    def keep(self, texts: Sequence[str]) -> list[bool]:
        """For each text in order, whether it is new; the new ones are remembered."""
        count = len(texts)
        exact, normalized, (near, near_owner) = self._keys(texts)
        keys = np.concatenate([exact, normalized, near])
        owner = np.concatenate([np.arange(count), np.arange(count), near_owner])
        seen, located = self._filter.contains(keys)
        seen |= _shared_with_earlier(keys, owner)
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
        self._filter.add((located[0][keep_key], located[1][keep_key]), int(kept.sum()))
        return kept.tolist()

    def _keys(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, tuple]:
        """Exact keys, normalised keys, and near keys with the index of their text.

        Python only splits the batch into words and looks each word's hash up; the keys
        themselves are computed with numpy over the whole batch.
        """
        digest = xxhash.xxh3_64_intdigest
        exact = np.fromiter((digest(text.encode()) for text in texts), np.uint64, len(texts))
        flat, lengths = self._word_hashes.of_texts(texts)
        owner = np.repeat(np.arange(len(texts)), lengths)
        return (
            exact ^ _EXACT_TAG,
            _sequence_keys(flat, lengths) ^ _NORMALIZED_TAG,
            _near_keys(flat, owner, len(texts)),
        )


_BOUNDARY = "\x00"
"""Put between texts to split a whole batch in one call; no normalised word contains it."""


class _WordHashes(dict):
    """Word -> its xxHash, computed on first use; the lowest bit set marks stop words."""

    def __missing__(self, word: str) -> int:
        value = xxhash.xxh3_64_intdigest(word.encode()) & ~1 | (word in STOP_WORDS)
        self[word] = value
        return value

    def of_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The hashes of the normalised words of all texts, in order, and each text's count.

        The batch is joined with a boundary word between texts, lower-cased, stripped of
        punctuation and split once: a few C calls for the batch instead of a dozen per text.
        A batch where a text holds the boundary character falls back to text by text.
        """
        if len(self) > _TOKEN_CACHE_LIMIT:
            self.clear()
        joined = f" {_BOUNDARY} ".join(texts)
        if not texts or joined.count(_BOUNDARY) != len(texts) - 1:
            return self.of_texts_one_by_one(texts)
        joined = joined.lower()
        for char in _PUNCTUATION:
            if char in joined:
                joined = joined.replace(char, " ")
        words = joined.split()
        hashes = np.fromiter(map(self.__getitem__, words), np.uint64, len(words))
        boundaries = np.flatnonzero(hashes == self[_BOUNDARY])
        if len(boundaries) != len(texts) - 1:  # a word whose hash is the boundary's
            return self.of_texts_one_by_one(texts)
        edges = np.concatenate(([-1], boundaries, [len(words)]))
        return np.delete(hashes, boundaries), np.diff(edges) - 1

    def of_texts_one_by_one(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """What `of_texts` returns, from each text split on its own."""
        word_lists = [normalized_words(text) for text in texts]
        lengths = np.fromiter(map(len, word_lists), np.intp, len(word_lists))
        words = itertools.chain.from_iterable(word_lists)
        return np.fromiter(map(self.__getitem__, words), np.uint64, lengths.sum()), lengths


def _shared_with_earlier(keys: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """For each key, whether a text earlier in the batch (a lower owner) has the same key.

    Equal keys are brought together by one sort; each run's lowest owner is the first text that
    has it. (np.unique would do the same with a stable sort, several times slower.)
    """
    if not len(keys):
        return np.zeros(0, dtype=bool)
    order = np.argsort(keys)
    sorted_keys = keys[order]
    sorted_owner = owner[order]
    run_starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    first_owner = np.minimum.reduceat(sorted_owner, run_starts)
    run_lengths = np.diff(np.append(run_starts, len(keys)))
    shared = np.empty(len(keys), dtype=bool)
    shared[order] = sorted_owner > np.repeat(first_owner, run_lengths)
    return shared


_MAX_WORDS = 1 << 16
_POWERS = np.cumprod(np.full(_MAX_WORDS, 0x100000001B3, dtype=np.uint64), dtype=np.uint64)
"""Powers of a 64-bit odd multiplier: position weights for hashing a word sequence."""


def _sequence_keys(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """One key per text for its exact word sequence (the normalised text)."""
    keys = np.zeros(len(lengths), dtype=np.uint64)
    has_words = lengths > 0
    if not has_words.any():
        return keys
    ends = np.cumsum(lengths)
    starts = ends - lengths
    positions = np.arange(len(flat)) - np.repeat(starts, lengths)
    with np.errstate(over="ignore"):
        weighted = flat * _POWERS[np.minimum(positions, _MAX_WORDS - 1)]
        keys[has_words] = np.add.reduceat(weighted, starts[has_words], dtype=np.uint64)
    return keys


_WORD_BITS = np.uint64(48)
_WORD_MASK = np.uint64((1 << 48) - 1)


def _near_keys(flat: np.ndarray, owner: np.ndarray, texts: int) -> tuple[np.ndarray, np.ndarray]:
    """Each content-word set's key (the sum of its word hashes) and the sum less each word.

    Only texts with at least MIN_WORDS_FOR_NEAR distinct content words get keys. Returns the
    keys and, for each, the index of its text.
    """
    content = (flat & np.uint64(1)) == 0
    # Distinct words per text: one sort of (text << 48 | word hash >> 16), repeats dropped.
    # 48 bits of a word's hash tell the few words of one text apart with certainty to spare.
    packed = (owner[content].astype(np.uint64) << _WORD_BITS) | (flat[content] >> np.uint64(16))
    packed.sort()
    if len(packed) > 1:
        packed = packed[np.concatenate(([True], packed[1:] != packed[:-1]))]
    owners = (packed >> _WORD_BITS).astype(np.intp)
    words = packed & _WORD_MASK
    counts = np.bincount(owners, minlength=texts)
    eligible = counts[owners] >= MIN_WORDS_FOR_NEAR
    words, owners = words[eligible], owners[eligible]
    if not len(words):
        return np.zeros(0, np.uint64), np.zeros(0, np.intp)
    starts = np.flatnonzero(np.concatenate(([True], owners[1:] != owners[:-1])))
    sizes = np.diff(np.append(starts, len(words)))
    with np.errstate(over="ignore"):
        totals = np.add.reduceat(words, starts, dtype=np.uint64)
        deletions = np.repeat(totals, sizes) - words
    return np.concatenate([totals, deletions]), np.concatenate([owners[starts], owners])
