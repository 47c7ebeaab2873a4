"""The n-gram featuriser: a few texts hashed in plain Python give exactly the vectorised ids."""

from __future__ import annotations

import csv

import numpy as np

from agent_training_server.engines import text_features as tf
from tests.conftest import BANKING77

AWKWARD = [
    "",
    "   ",
    "a",
    "Tab\tand\nnewline  spaces",
    "h\u00e9llo w\u00f6rld \u00f1 \u65e5\u672c\u8a9e \u30c6\u30ad\u30b9\u30c8",
    "nul\x00byte in\x00 it",  # NUL separates words' bytes in the vectorised hashing
    "!!! ???",
    "x" * 300,
    "ab cd AB CD ab cd",  # repeated unigrams and bigrams: counts above one
]


def _texts() -> list[str]:
    with open(BANKING77 / "test.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return [row["text"] for row in rows[:300]] + AWKWARD


def test_small_batches_hash_to_the_same_features_as_large_ones() -> None:
    config = tf.FeatureConfig()
    texts = _texts()
    vectorised = tf.raw_features(texts, config)  # far above SMALL_BATCH
    assert len(texts) > tf.SMALL_BATCH
    for doc, text in enumerate(texts):
        small = tf.raw_features([text], config)
        for (docs, buckets, counts), (all_docs, all_buckets, all_counts) in zip(
            small, vectorised, strict=True
        ):
            mine = all_docs == doc
            assert (docs == 0).all()
            np.testing.assert_array_equal(buckets, all_buckets[mine], err_msg=repr(text))
            np.testing.assert_array_equal(counts, all_counts[mine], err_msg=repr(text))


def test_a_text_scores_the_same_alone_and_in_a_batch() -> None:
    """Micro-batching relies on it: a call's answer does not depend on its batch-mates."""
    config = tf.FeatureConfig()
    texts = _texts()
    blocks = tf.raw_features(texts, config)
    vocabulary = tf.fit_vocabulary(blocks, len(texts))
    batch = tf.transform(blocks, vocabulary, len(texts))
    for doc in (0, 7, len(texts) - 1):
        alone = tf.transform(tf.raw_features([texts[doc]], config), vocabulary, 1)
        np.testing.assert_array_equal(alone.offsets, [0, np.diff(batch.offsets)[doc]])
        span = slice(batch.offsets[doc], batch.offsets[doc + 1])
        np.testing.assert_array_equal(alone.indices, batch.indices[span])
        np.testing.assert_array_equal(alone.weights, batch.weights[span])
