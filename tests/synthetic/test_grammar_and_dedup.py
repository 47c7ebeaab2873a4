"""The template grammar and the duplicate filter, on their own."""

from __future__ import annotations

import pytest

from agent_training_server.synthetic.dedup import (
    Deduplicator,
    _WordHashes,
    normalize,
    normalized_words,
)
from agent_training_server.synthetic.grammar import GrammarError, parse_grammar


def test_grammar_expands_aliases_slots_choices_and_optional_parts() -> None:
    grammar = parse_grammar(
        "%[greet] -> Hello!\n"
        "    (hi|hello) @[who][ again]\n"
        "    ~[polite?] good morning\n"
        "~[polite]\n"
        "    well\n"
        "@[who]\n"
        "    there\n"
        "    friend\n"
    )
    (intent,) = grammar.intents
    assert intent.name == "greet" and intent.response == "Hello!"
    assert set(intent.sentences) == {
        "hi there", "hi there again", "hi friend", "hi friend again",
        "hello there", "hello there again", "hello friend", "hello friend again",
        "good morning", "well good morning",
    }  # fmt: skip
    assert intent.possible_sentences == 10


def test_large_grammars_are_sampled_to_a_bounded_pool() -> None:
    digits = "\n".join(f"    {d}" for d in range(10))
    grammar = parse_grammar(
        "%[number]\n    @[d]@[d]@[d]@[d]@[d]@[d]\n@[d]\n" + digits + "\n", seed=1
    )
    (intent,) = grammar.intents
    assert intent.possible_sentences == 10**6
    assert 3_000 < len(intent.sentences) <= 4_000
    again = parse_grammar("%[number]\n    @[d]@[d]@[d]@[d]@[d]@[d]\n@[d]\n" + digits, seed=1)
    assert again.intents[0].sentences == intent.sentences


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("    orphan line", 1, "before any definition"),
        ("%[a]\n    hi ~[missing]", 2, "unknown alias ~[missing]"),
        ("%[a]\n    (x|(y))", 2, "nested '('"),
        ("%[a]\n    [open", 2, "'[' without its ']'"),
        ("%[a]\n    (a|b", 2, "'(' without its ')'"),
        ("%[a]\n    ~[x]\n~[x]\n    ~[x]", 4, "refers to itself"),
        ("%[a]\n    x\n%[a]\n    y", 3, "defined twice"),
        ("~[a] -> nope\n    x", 1, "only intents take"),
        ("~[a]\n    x", 0, "defines no intent"),
    ],
)
def test_grammar_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(GrammarError) as caught:
        parse_grammar(text)
    assert caught.value.line == line
    assert words in str(caught.value)
    assert caught.value.hint


def test_deduplicator_removes_exact_normalised_and_near_duplicates() -> None:
    dedup = Deduplicator(100)
    original = "Please cancel my hotel booking for Friday night"
    assert dedup.keep_one(original)
    assert not dedup.keep_one(original)
    assert not dedup.keep_one("please, cancel my HOTEL booking for friday night!")
    # Same content words in another order, one word replaced: a near duplicate.
    assert not dedup.keep_one("cancel the hotel booking for friday evening please")
    # Two content words changed: different enough.
    assert dedup.keep_one("please move my hotel booking to saturday night")
    # Short texts are only compared exactly (one word changes their meaning).
    assert dedup.keep_one("cancel my order")
    assert dedup.keep_one("track my order")
    assert (dedup.counts.exact, dedup.counts.normalized, dedup.counts.near) == (1, 1, 1)


def test_normalize_ignores_case_punctuation_and_spacing() -> None:
    assert normalize("  Where IS my   parcel?!") == "where is my parcel"


def test_blocked_bloom_filter_has_no_false_negatives_and_few_false_positives() -> None:
    import numpy as np

    from agent_training_server.synthetic.dedup import BlockedBloomFilter

    bloom = BlockedBloomFilter(200_000)
    rng = np.random.default_rng(0)
    added = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    bloom.add(bloom.locate(added))
    assert bloom.contains(bloom.locate(added)).all()
    others = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    assert bloom.contains(bloom.locate(others)).mean() < 3e-3
    assert bloom.nbytes == 200_000 * 3


def test_a_large_count_makes_the_rest_of_its_filter_only_once_it_gets_there(monkeypatch) -> None:
    from agent_training_server.synthetic import dedup

    monkeypatch.setattr(dedup, "FIRST_STAGE_TEXTS", 2_000)
    filtered = Deduplicator(1_000_000)
    first_stage = 2_000 * 14 * 48 // 8  # 14 keys per text, 48 bits per key
    assert filtered.nbytes == first_stage  # not the 42 MB a million texts take
    before = [f"order number {i}" for i in range(3_000)]
    after = [f"parcel number {i}" for i in range(3_000)]
    assert all(filtered.keep(before[:1_999])) and filtered.nbytes == first_stage
    assert all(filtered.keep(before[1_999:]))  # the batch that reaches the first stage's size
    assert filtered.nbytes == first_stage + (1_000_000 - 2_000) * 14 * 3
    assert all(filtered.keep(after))
    # Both stages remember: nothing kept in either is kept again.
    assert not any(filtered.keep(before + after))
    assert filtered.counts.exact == 6_000


def test_small_counts_keep_one_filter_of_their_size() -> None:
    assert Deduplicator(50_000).nbytes == 50_000 * 14 * 3


def test_word_hashes_of_a_batch_equal_those_of_each_text() -> None:
    texts = ["Hello, World!", "", "a\x00b c", "Where's my   card?", "multi\nline text", "x"]
    for batch in (texts, [t for t in texts if "\x00" not in t], [], ["only one"]):
        hashes = _WordHashes()
        flat, lengths = hashes.of_texts(batch)
        expected_flat, expected_lengths = hashes.of_texts_one_by_one(batch)
        assert flat.tolist() == expected_flat.tolist()
        assert (
            lengths.tolist()
            == expected_lengths.tolist()
            == [len(normalized_words(t)) for t in batch]
        )


def test_keys_shared_with_an_earlier_text_of_the_batch() -> None:
    import numpy as np

    from agent_training_server.synthetic.dedup import _shared_with_earlier

    rng = np.random.default_rng(0)
    keys = rng.integers(0, 50, 2_000).astype(np.uint64)
    owner = np.sort(rng.integers(0, 400, 2_000))
    first_owner: dict[int, int] = {}
    expected = []
    for key, text in zip(keys.tolist(), owner.tolist(), strict=True):
        first_owner.setdefault(key, text)
        expected.append(first_owner[key] < text)
    assert _shared_with_earlier(keys, owner).tolist() == expected
    assert _shared_with_earlier(keys[:0], owner[:0]).tolist() == []
