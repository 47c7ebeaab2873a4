r"""Hashed n-gram features of texts, as the exported model.onnx of an n-gram agent takes them.

This file is copied into export bundles as ``ngram_features.py``: it needs Python's standard
library and numpy only, so that a bundle can be scored anywhere. It computes the same ids as the
service (engines/text_features.py, which is faster on large batches); a test checks that they
agree.

For each text, lowercased:

- word n-grams: the ``\w+`` tokens (Python's Unicode word characters), each hashed with CRC-32
  of its UTF-8 bytes; bigrams combine two neighbours' hashes (``left * PRIME ^ (right +
  BIGRAM_OFFSET)``, modulo 2**64); a hash's id is ``hash % word_buckets``.
- character n-grams: for each whitespace-separated word, the UTF-8 bytes of ``" " + word + " "``
  (cut at NUL bytes), every run of ``char_ngram_min`` to ``char_ngram_max`` bytes hashed
  FNV-style (start at n; per byte ``hash = hash * PRIME ^ byte`` modulo 2**64); its id is
  ``word_buckets + hash % char_buckets``.

Each distinct id of a text comes with its count. ``ngram_arrays`` pads them into the two
tensors model.onnx takes: ``ngram_ids`` (int64, -1 where padded) and ``ngram_counts``
(float32, 0 where padded), one row per text.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

PRIME = 1099511628211
"""FNV-1a's 64-bit prime."""
BIGRAM_OFFSET = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1
WORD = re.compile(r"\w+")


def _word_ids(text: str, word_buckets: int) -> list[int]:
    unigrams = [zlib.crc32(token.encode()) for token in WORD.findall(text)]
    bigrams = [
        ((left * PRIME) & MASK) ^ ((right + BIGRAM_OFFSET) & MASK)
        for left, right in itertools.pairwise(unigrams)
    ]
    return [gram % word_buckets for gram in unigrams + bigrams]


def _char_ids(text: str, word_buckets: int, char_buckets: int, low: int, high: int) -> list[int]:
    ids = []
    for word in text.split():
        for piece in f" {word} ".encode().split(b"\x00"):
            for n in range(low, high + 1):
                for start in range(len(piece) - n + 1):
                    gram = n
                    for byte in piece[start : start + n]:
                        gram = ((gram * PRIME) & MASK) ^ byte
                    ids.append(word_buckets + gram % char_buckets)
    return ids


def ngram_counts(text: str, settings: Mapping[str, int]) -> dict[int, int]:
    """Each n-gram id of ``text`` with its count.

    ``settings``: ``word_buckets``, ``char_buckets``, ``char_ngram_min`` and ``char_ngram_max``,
    as the bundle's manifest gives them for the ``ngram_ids`` input.
    """
    lowered = text.lower()
    word_buckets = int(settings["word_buckets"])
    ids = _word_ids(lowered, word_buckets) + _char_ids(
        lowered,
        word_buckets,
        int(settings["char_buckets"]),
        int(settings["char_ngram_min"]),
        int(settings["char_ngram_max"]),
    )
    counts: dict[int, int] = {}
    for feature in ids:
        counts[feature] = counts.get(feature, 0) + 1
    return counts


def ngram_arrays(
    texts: Sequence[str], settings: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``ngram_ids`` and ``ngram_counts`` inputs of a batch of texts, padded to its longest."""
    rows = [sorted(ngram_counts(text, settings).items()) for text in texts]
    width = max([1, *(len(row) for row in rows)])
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    counts = np.zeros((len(rows), width), dtype=np.float32)
    for index, row in enumerate(rows):
        if row:
            ids[index, : len(row)] = [feature for feature, _count in row]
            counts[index, : len(row)] = [count for _feature, count in row]
    return ids, counts
