"""Synonyms beyond the lexicon: merging them into a source's synonyms, and the encoder finding them.

The encoder tests use the real all-MiniLM-L6-v2 (installed with the pretrained extra), as the
server does.
"""

from __future__ import annotations

import pytest

from agent_training_server.synthetic import encoder_synonyms, textops, wordforms
from agent_training_server.synthetic.catalog import lexicon
from agent_training_server.synthetic.sources import ParaphraseSource, SourceExample


def test_extra_synonyms_join_the_lexicons_and_keep_punctuation() -> None:
    text = "the phone was stolen yesterday?"
    words, lexicon_hits = textops.synonym_hits_with(text, {})
    assert words == tuple(text.split())
    phone = next(hit for hit in lexicon_hits if hit[0] == 1)
    assert phone[2] == lexicon.SYNONYMS["phone"]

    _words, hits = textops.synonym_hits_with(text, {1: ("telephone",), 4: ("recently",)})
    by_index = {hit[0]: hit for hit in hits}
    assert by_index[1][2] == (*lexicon.SYNONYMS["phone"], "telephone")
    assert by_index[4] == (4, 1, ("recently",), "?")  # the question mark stays on the word
    assert [hit[0] for hit in hits] == sorted(by_index)


def test_a_word_inside_a_lexicon_phrase_keeps_the_phrases_synonyms() -> None:
    text = "i want to close my card"
    _words, lexicon_hits = textops.synonym_hits_with(text, {})
    phrase = next(hit for hit in lexicon_hits if hit[1] == 2)
    _words, hits = textops.synonym_hits_with(text, {phrase[0]: ("x",), phrase[0] + 1: ("y",)})
    assert hits == lexicon_hits


def test_paraphrases_use_the_extra_synonyms_and_the_same_seed_repeats() -> None:
    sources = [SourceExample("The parcel came damaged", "damaged")]
    extra = {"the parcel came damaged": {3: ("crumpled",)}}

    def variants(synonyms) -> list[str]:
        source = ParaphraseSource(sources, "medium", 5, 200, extra_synonyms=synonyms)
        return [source.candidate(0).input for _ in range(200)]

    with_extra = variants(extra)
    assert any("crumpled" in text for text in with_extra)
    assert not any("crumpled" in text for text in variants(None))
    assert with_extra == variants(extra)


@pytest.fixture(scope="module")
def found() -> dict[str, encoder_synonyms.WordSynonyms]:
    texts = [
        "my telephone number has changed",
        "the exchange rate you gave me was incorrect",
        "which countries can i get a card in",
        "i want to stop paying for this",
        "please tell me how to top up",
        "i made a payment to the wrong account",
    ]
    return dict(encoder_synonyms.find(texts))


def test_the_encoder_finds_synonyms_the_lexicon_lacks(found) -> None:
    synonyms = found["the exchange rate you gave me was incorrect"]
    assert any(synonyms.values()), "the encoder found no synonym at all"
    every = {word for by_index in found.values() for words in by_index.values() for word in words}
    unknown_to_lexicon = every - {w for values in lexicon.SYNONYMS.values() for w in values}
    assert unknown_to_lexicon, "nothing beyond the lexicon"


def test_encoder_synonyms_skip_other_forms_function_words_and_words_a_bank_tells_apart(found):
    for text, by_index in found.items():
        words = text.split()
        for index, synonyms in by_index.items():
            word = words[index]
            assert word not in wordforms.KEPT_AS_THEY_ARE
            assert not wordforms.base_forms(word) & lexicon.TOLD_APART
            for synonym in synonyms:
                assert not wordforms.base_forms(synonym) & wordforms.base_forms(word)
                assert not wordforms.base_forms(synonym) & lexicon.TOLD_APART
    assert not found["i want to stop paying for this"].get(3)  # "stop"


def test_encoder_synonyms_are_never_opposites(found) -> None:
    # all-MiniLM-L6-v2 puts these opposites among the nearest words; the filters take them out
    # and keep the true synonyms beside them.
    changed = found["my telephone number has changed"].get(4, ())
    assert "modified" in changed and "unchanged" not in changed
    wrong = found["i made a payment to the wrong account"].get(6, ())
    assert "incorrect" in wrong and not {"right", "correct", "correctly"} & set(wrong)
    incorrect = found["the exchange rate you gave me was incorrect"].get(7, ())
    assert "wrong" in incorrect and not {"correct", "correctly", "right"} & set(incorrect)


def test_encoder_synonyms_are_the_same_when_found_again(found) -> None:
    encoder_synonyms._FOUND.clear()
    again = encoder_synonyms.find(list(found))
    assert dict(again) == found
