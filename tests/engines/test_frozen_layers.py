"""The frozen lower layers' cache and the packed upper layers that steps run over it."""

from __future__ import annotations

import pytest
import torch

from agent_training_server.engines import frozen_layers, pretrained

# Lengths far apart, so that a padded batch would be mostly padding.
TEXTS = [
    "card",
    "my card has not arrived yet and it has been two weeks since I ordered it, what now",
    "top up failed",
    "why was I charged a fee for the transfer I made to my friend abroad last Tuesday",
    "exchange rate?",
]


@pytest.fixture(scope="module")
def encoder() -> pretrained.SentenceEncoder:
    return pretrained.SentenceEncoder()


def test_packed_upper_layers_embed_as_the_whole_encoder(encoder) -> None:
    states = frozen_layers.CachedLowerLayers(encoder, TEXTS)
    encoder.eval()
    expected = encoder.embed(TEXTS)
    with torch.no_grad():
        rows = [3, 0, 4]  # any rows, in any order
        assert torch.allclose(states.embed(rows), expected[rows], atol=1e-5)
    assert torch.allclose(states.embed_all(), expected, atol=1e-5)


def test_packing_groups_texts_by_length_and_pools_each_over_its_own_tokens() -> None:
    # Texts of 2, 3 and 1 tokens: packed shortest first (2, 0, 1), in groups of 2 texts.
    packing = frozen_layers.Packing([2, 3, 1], torch.device("cpu"), row_multiple=4, group_size=2)
    values = torch.arange(6, dtype=torch.float32)[:, None].repeat(1, 2)
    tokens = packing.packed([values[:2], values[2:5], values[5:]])
    assert tokens[:, 0].tolist() == [5, 0, 1, 2, 3, 4, 0, 0]  # 6 tokens, 2 spare rows
    tokens[6:] = 99.0  # whatever a layer leaves in the spare rows is never read
    first, second = packing.groups
    assert first.pad(tokens)[:, :, 0].tolist() == [[5, 0], [0, 1]]  # each text padded
    assert second.pad(tokens)[:, :, 0].tolist() == [[2, 3, 4]]  # to its group's longest
    rejoined = packing.joined([group.unpad(group.pad(tokens)) for group in packing.groups])
    assert rejoined[:, 0].tolist() == [5, 0, 1, 2, 3, 4, 0, 0]
    assert packing.mean(tokens)[:, 0].tolist() == [0.5, 3.0, 5.0]  # in the texts' own order


def test_gradients_reach_the_upper_layers_only(encoder) -> None:
    states = frozen_layers.CachedLowerLayers(encoder, TEXTS)
    encoder.train()
    frozen_layers.train_upper_layers(encoder, True)
    encoder.zero_grad(set_to_none=True)
    states.embed([0, 1, 2]).sum().backward()
    layers = encoder.transformer.encoder.layer
    assert all(p.grad is None for p in encoder.transformer.embeddings.parameters())
    assert all(
        p.grad is None
        for layer in layers[: frozen_layers.FROZEN_LAYERS]
        for p in layer.parameters()
    )
    upper = frozen_layers.upper_parameters(encoder)
    assert upper and all(p.grad is not None for p in upper)
    frozen_layers.train_upper_layers(encoder, False)
    encoder.eval()


def test_embedding_everything_leaves_the_encoder_in_its_mode(encoder) -> None:
    states = frozen_layers.CachedLowerLayers(encoder, TEXTS)
    encoder.train()
    first = states.embed_all()
    assert encoder.transformer.training  # put back
    assert torch.equal(first, states.embed_all())  # no dropout while embedding
    encoder.eval()
