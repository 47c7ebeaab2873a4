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


def test_packing_round_trips_and_pools_each_text_over_its_own_tokens() -> None:
    packing = frozen_layers.Packing([2, 3, 1], torch.device("cpu"))
    tokens = torch.arange(6, dtype=torch.float32)[:, None].repeat(1, 2)  # texts 0-1, 2-4, 5
    padded = packing.pad(tokens)
    assert padded.shape == (3, 3, 2)
    assert padded[:, :, 0].tolist() == [[0, 1, 0], [2, 3, 4], [5, 0, 0]]
    assert torch.equal(packing.unpad(padded), tokens)
    assert packing.mean(tokens)[:, 0].tolist() == [0.5, 3.0, 5.0]


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
