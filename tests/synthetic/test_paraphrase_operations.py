"""The paraphrasing operations on their own: word forms, and the rewrite that combines them."""

from __future__ import annotations

import random

from agent_training_server.synthetic import textops, wordforms
from agent_training_server.synthetic.sources import ParaphraseSource, SourceExample


def test_nouns_and_verbs_have_their_other_inflections() -> None:
    assert {"charges", "charged", "charging"} <= set(wordforms.other_forms("charge"))
    assert "cards" in wordforms.other_forms("card")
    assert "activate" in wordforms.other_forms("activated")
    assert "charge" not in wordforms.other_forms("charge")


def test_function_and_politeness_words_keep_their_form() -> None:
    for word in ("please", "was", "have", "the", "my", "could", "thanks"):
        assert wordforms.other_forms(word) == ()
    assert wordforms.other_forms("it's") == ()  # not a plain word
    assert wordforms.other_forms("up") == ()  # too short


def test_word_forms_keep_punctuation_and_the_words_they_leave() -> None:
    text = "please refund the charge?"
    varied = wordforms.vary_word_forms(text, random.Random(0), rate=1.0)
    words = varied.split()
    assert words[0] == "please" and words[2] == "the" and words[3].endswith("?")
    assert words[1] in wordforms.other_forms("refund")
    assert words[3][:-1] in wordforms.other_forms("charge")
    assert wordforms.vary_word_forms(text, random.Random(0), rate=0.0) == text


def test_word_forms_are_the_same_for_a_seed() -> None:
    text = "i transferred money to my friend but it is still pending"
    first = [wordforms.vary_word_forms(text, random.Random(seed), 0.5) for seed in range(20)]
    again = [wordforms.vary_word_forms(text, random.Random(seed), 0.5) for seed in range(20)]
    assert first == again
    assert len(set(first)) > 5


def test_medium_paraphrases_vary_word_forms_and_keep_labels() -> None:
    sources = [
        SourceExample("How do I activate my card?", "activate_my_card"),
        SourceExample("Why was I charged a fee for my transfer?", "transfer_fee_charged"),
    ]
    source = ParaphraseSource(sources, "medium", seed=3, variants_per_example=50)
    samples = [source.candidate(unit) for unit in (0, 1) for _ in range(50)]
    assert {sample.label for sample in samples[:50]} == {"activate_my_card"}
    assert {sample.label for sample in samples[50:]} == {"transfer_fee_charged"}
    texts = " ".join(sample.input for sample in samples)
    assert any(form in texts for form in ("activates", "activated", "activating", "cards"))
    assert any(form in texts for form in ("charges", "charging", "fees", "transfers"))


def test_every_difficulty_has_word_form_rates() -> None:
    for rates in textops.PARAPHRASE_RATES.values():
        assert 0.0 < rates.word_forms <= 1.0 and 0.0 < rates.word_form_rate <= 1.0


def test_paraphrases_add_only_context_sentences_that_name_no_subject() -> None:
    from agent_training_server.synthetic.catalog import styles

    neutral = styles.NEUTRAL_CONTEXT_SENTENCES
    assert 10 <= len(neutral) < len(styles.CONTEXT_SENTENCES)
    assert not any(word in sentence.lower() for sentence in neutral for word in ("phone", "app "))
    source = ParaphraseSource(
        [SourceExample("my phone was stolen", "lost_or_stolen_phone")], "hard", seed=1
    )
    added = [source.candidate(0).input for _ in range(300)]
    laden = set(styles.CONTEXT_SENTENCES) - set(neutral)
    assert any(text.startswith(neutral) for text in added)
    assert not any(sentence in text for text in added for sentence in laden)


def test_word_edits_swap_or_repeat_but_never_drop_a_word() -> None:
    text = "why was my card payment declined at the shop"
    edited = [textops.edit_words(text, random.Random(seed)) for seed in range(200)]
    assert all(sorted(text.split()) == sorted(e.split()) or len(e.split()) > 9 for e in edited)
    assert any(len(e.split()) == 10 for e in edited)  # a synonym repeated ("payment" -> ...)
    assert any(e != text and len(e.split()) == 9 for e in edited)  # a swap
