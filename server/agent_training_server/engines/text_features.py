"""Hashed word and character n-gram TF-IDF features, computed with numpy over a whole batch.

Short customer messages are well served by sparse n-gram features: word unigrams and bigrams
catch intent words, character 2-5 grams catch morphology and typos. Hashing keeps memory bounded;
the vocabulary is then compacted to the buckets seen in training, so the model only has rows
for features it can learn. Everything is vectorised (a rolling hash over the concatenated bytes of
all texts) because a Python loop over every n-gram of 10,000 texts would cost seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import zlib
from collections.abc import Sequence

import numpy as np

WORD = re.compile(r"\w+")
PRIME = np.uint64(1099511628211)  # FNV-1a 64-bit prime: mixes bytes well enough for bucketing
SEPARATOR = 0


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """How texts become features."""

    word_buckets: int = 1 << 20
    char_buckets: int = 1 << 21
    char_ngram_min: int = 2
    char_ngram_max: int = 4


@dataclasses.dataclass
class SparseBatch:
    """Features of a batch of texts in CSR form: feature ids, row offsets, tf-idf weights."""

    indices: np.ndarray  # int64, into the compact vocabulary
    offsets: np.ndarray  # int64, len = rows + 1
    weights: np.ndarray  # float32

    def rows(self, selection: np.ndarray) -> SparseBatch:
        """Return the CSR of the selected rows, in the given order."""
        starts, ends = self.offsets[selection], self.offsets[selection + 1]
        lengths = ends - starts
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        # Position of every kept entry: its rank in the result shifted by its row's move.
        positions = np.arange(offsets[-1]) + np.repeat(starts - offsets[:-1], lengths)
        return SparseBatch(self.indices[positions], offsets, self.weights[positions])

    def span(self, start: int, stop: int) -> SparseBatch:
        """Return rows start..stop-1 as views: a batch cut from an epoch's reordered rows."""
        first, last = self.offsets[start], self.offsets[stop]
        offsets = self.offsets[start : stop + 1] - first
        return SparseBatch(self.indices[first:last], offsets, self.weights[first:last])


def _word_hashes(texts: Sequence[str], config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    # Tokens of all texts in one array (a numpy call per text would cost more than the hashing);
    # a bigram joins two neighbouring tokens of the same text.
    docs: list[int] = []
    tokens: list[int] = []
    for doc, text in enumerate(texts):
        words = WORD.findall(text)
        tokens.extend(zlib.crc32(word.encode()) for word in words)
        docs.extend(itertools.repeat(doc, len(words)))
    if not tokens:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    unigrams = np.asarray(tokens, dtype=np.uint64)
    unigram_docs = np.asarray(docs, dtype=np.int64)
    same_text = unigram_docs[1:] == unigram_docs[:-1]
    bigrams = unigrams[:-1] * PRIME ^ (unigrams[1:] + np.uint64(_BIGRAM_OFFSET))
    grams = np.concatenate((unigrams, bigrams[same_text]))
    buckets = (grams % np.uint64(config.word_buckets)).astype(np.int64)
    return np.concatenate((unigram_docs, unigram_docs[:-1][same_text])), buckets


def _char_hashes(texts: Sequence[str], config: FeatureConfig) -> tuple[np.ndarray, np.ndarray]:
    # Like scikit-learn's "char_wb": n-grams inside each space-padded word, none across words.
    words = [(doc, f" {word} ".encode()) for doc, text in enumerate(texts) for word in text.split()]
    if not words:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    encoded = [word for _doc, word in words]
    lengths = np.fromiter((len(e) + 1 for e in encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b"\x00".join(encoded) + b"\x00", dtype=np.uint8)
    word_doc = np.fromiter((doc for doc, _word in words), dtype=np.int64, count=len(words))
    doc_of = np.repeat(word_doc, lengths)
    separators = np.concatenate(([0], np.cumsum(data == SEPARATOR)))
    values = data.astype(np.uint64)
    docs, buckets = [], []
    with np.errstate(over="ignore"):  # the rolling hash wraps around 2**64 on purpose
        for n in range(config.char_ngram_min, config.char_ngram_max + 1):
            count = len(data) - n + 1
            if count <= 0:
                continue
            grams = np.full(count, np.uint64(n), dtype=np.uint64)
            for k in range(n):
                grams = grams * PRIME ^ values[k : k + count]
            # Keep n-grams that do not cross from one text into the next.
            inside = separators[n : n + count] - separators[:count] == 0
            docs.append(doc_of[:count][inside])
            buckets.append((grams[inside] % np.uint64(config.char_buckets)).astype(np.int64))
    return np.concatenate(docs), np.concatenate(buckets) + config.word_buckets


SMALL_BATCH = 4
"""Batches up to this many texts are hashed in plain Python: for a text or two, numpy's fixed
cost per call (dozens of calls) is several times the work itself. Both ways give the same ids."""

_MASK = (1 << 64) - 1
_PRIME = int(PRIME)
_BIGRAM_OFFSET = 0x9E3779B97F4A7C15


def raw_features(texts: Sequence[str], config: FeatureConfig) -> list[tuple[np.ndarray, ...]]:
    """Return, per block (words, chars), (doc ids, bucket ids, term counts), one entry per term.

    Entries are sorted by (doc id, bucket id) within each block.
    """
    lowered = [text.lower() for text in texts]
    if len(lowered) <= SMALL_BATCH:
        return _small_batch_features(lowered, config)
    blocks: list[tuple[np.ndarray, ...]] = []
    for docs, buckets in (_word_hashes(lowered, config), _char_hashes(lowered, config)):
        total = config.word_buckets + config.char_buckets
        keys, counts = np.unique(docs * total + buckets, return_counts=True)
        blocks.append((keys // total, keys % total, counts))
    return blocks


def _small_batch_features(
    lowered: Sequence[str], config: FeatureConfig
) -> list[tuple[np.ndarray, ...]]:
    """`raw_features` of a few lowered texts, the same hashes computed one n-gram at a time."""
    words: list[tuple[int, int, int]] = []
    chars: list[tuple[int, int, int]] = []
    for doc, text in enumerate(lowered):
        words.extend((doc, bucket, count) for bucket, count in _word_counts(text, config))
        chars.extend((doc, bucket, count) for bucket, count in _char_counts(text, config))
    return [_block(words), _block(chars)]


def _word_counts(text: str, config: FeatureConfig) -> list[tuple[int, int]]:
    unigrams = [zlib.crc32(token.encode()) for token in WORD.findall(text)]
    bigrams = [
        ((left * _PRIME) & _MASK) ^ ((right + _BIGRAM_OFFSET) & _MASK)
        for left, right in itertools.pairwise(unigrams)
    ]
    counts: dict[int, int] = {}
    for gram in unigrams + bigrams:
        bucket = gram % config.word_buckets
        counts[bucket] = counts.get(bucket, 0) + 1
    return sorted(counts.items())


def _char_counts(text: str, config: FeatureConfig) -> list[tuple[int, int]]:
    counts: dict[int, int] = {}
    for word in text.split():
        for bucket in _word_char_buckets(word, config):
            counts[bucket] = counts.get(bucket, 0) + 1
    return sorted(counts.items())


@functools.lru_cache(maxsize=1 << 16)
def _word_char_buckets(word: str, config: FeatureConfig) -> tuple[int, ...]:
    """The character n-gram buckets of one word (customers reuse words: most calls hit)."""
    buckets = []
    # A NUL byte ends an n-gram in the vectorised hashing too (it is its separator).
    for piece in f" {word} ".encode().split(b"\x00"):
        for n in range(config.char_ngram_min, config.char_ngram_max + 1):
            for start in range(len(piece) - n + 1):
                gram = n
                for byte in piece[start : start + n]:
                    gram = ((gram * _PRIME) & _MASK) ^ byte
                buckets.append(gram % config.char_buckets + config.word_buckets)
    return tuple(buckets)


def _block(entries: list[tuple[int, int, int]]) -> tuple[np.ndarray, ...]:
    if not entries:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    docs, buckets, counts = zip(*entries, strict=True)
    return (
        np.asarray(docs, dtype=np.int64),
        np.asarray(buckets, dtype=np.int64),
        np.asarray(counts, dtype=np.int64),
    )


@dataclasses.dataclass
class Vocabulary:
    """The buckets seen in training, with their inverse document frequencies."""

    buckets: np.ndarray  # sorted int64 bucket ids
    idf: np.ndarray  # float32, one per bucket

    @property
    def size(self) -> int:
        """Number of features."""
        return len(self.buckets)


def fit_vocabulary(
    blocks: list[tuple[np.ndarray, ...]], documents: int, min_document_frequency: int = 1
) -> Vocabulary:
    """Learn the vocabulary and smoothed idf (as scikit-learn's) from training features.

    N-grams seen in fewer than ``min_document_frequency`` texts are left out: they cannot
    generalise, and every row saved makes each training step cheaper.
    """
    all_buckets = np.concatenate([block[1] for block in blocks])
    buckets, document_frequency = np.unique(all_buckets, return_counts=True)
    frequent = document_frequency >= min_document_frequency
    buckets, document_frequency = buckets[frequent], document_frequency[frequent]
    idf = np.log((1.0 + documents) / (1.0 + document_frequency)) + 1.0
    return Vocabulary(buckets, idf.astype(np.float32))


def transform(
    blocks: list[tuple[np.ndarray, ...]], vocabulary: Vocabulary, documents: int
) -> SparseBatch:
    """Weight terms by sublinear tf x idf, L2-normalise each block per text, build the CSR."""
    all_docs, all_ids, all_weights = [], [], []
    for docs, buckets, counts in blocks:
        position = np.searchsorted(vocabulary.buckets, buckets)
        position = np.minimum(position, vocabulary.size - 1)
        known = vocabulary.buckets[position] == buckets  # unseen n-grams carry no weight
        docs, ids = docs[known], position[known]
        weights = (1.0 + np.log(counts[known])) * vocabulary.idf[ids]
        norms = np.sqrt(np.bincount(docs, weights=weights**2, minlength=documents))
        weights = weights / np.maximum(norms[docs], 1e-12)
        all_docs.append(docs)
        all_ids.append(ids)
        all_weights.append(weights)
    docs = np.concatenate(all_docs)
    order = np.argsort(docs, kind="stable")
    offsets = np.concatenate(([0], np.cumsum(np.bincount(docs, minlength=documents))))
    return SparseBatch(
        np.concatenate(all_ids)[order].astype(np.int64),
        offsets.astype(np.int64),
        np.concatenate(all_weights)[order].astype(np.float32),
    )
