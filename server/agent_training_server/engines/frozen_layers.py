"""Fine-tuning the encoder's upper layers over the cached output of its frozen lower ones.

The token embeddings and the first FROZEN_LAYERS transformer layers keep the weights training
starts from (the pretrained encoder's, or the base version's): their output for a text cannot
change during training, so it is computed once per text, without gradients, and every step runs
only the layers above. Chosen on 10 examples per intent, held-out training texts of Banking77 and
HWU64's validation file, seeds 0-2 (bfloat16, 3 epochs): 3 frozen layers score as 2 do (85.4%
against 85.1% and 82.8% against 83.0%) in about three quarters of the time; 4 lost half a point
on HWU64; the whole encoder fine-tuned took twice as long as 2 layers for no gain. Much of the
gain is the token embeddings (11.7 million of the encoder's 22.7 million weights): frozen, the
optimizer no longer updates them at every step, and the texts are tokenised once.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from agent_training_server.engines import pretrained

FROZEN_LAYERS = 3
"""Transformer layers below the ones fine-tuned (MiniLM-L6 has 6), the token embeddings too:
few_shot's; transfer freezes as many (engines/transfer.py)."""
CACHE_BATCH = 64
"""Texts per pass when the frozen layers' output is computed, sorted by length."""
ROW_MULTIPLE = 64
"""A batch's packed tokens are padded to a multiple of this many rows. Every new number of rows
is a new matrix shape, and on a CPU the bfloat16 kernels are generated per shape: with exact
counts nearly every step of a job paid for that (Banking77, 10 per intent: about 0.7 s of each
3.3 s epoch). Rounded up, a job sees a few shapes, for at most 63 spare rows (about 3%)."""
ATTENTION_GROUP = 16
"""Texts of similar length padded together for attention (Packing)."""


def upper_parameters(
    encoder: pretrained.SentenceEncoder, frozen: int = FROZEN_LAYERS
) -> list[nn.Parameter]:
    """The weights training changes: the layers above the ``frozen`` lowest ones."""
    return [p for layer in encoder.transformer.encoder.layer[frozen:] for p in layer.parameters()]


def train_upper_layers(
    encoder: pretrained.SentenceEncoder, trainable: bool, frozen: int = FROZEN_LAYERS
) -> None:
    """Gradients on for the upper layers when ``trainable``; never for the ``frozen`` ones."""
    encoder.requires_grad_(False)
    for layer in encoder.transformer.encoder.layer[frozen:]:
        layer.requires_grad_(trainable)


class CachedLowerLayers:
    """Each text's token states after the frozen layers, computed once, on the encoder's device.

    The states of a text are kept unpadded (tokens x 384, float32); a batch packs them end to
    end (Packing), so a step computes the batch's real tokens and no padding.
    """

    def __init__(
        self,
        encoder: pretrained.SentenceEncoder,
        texts: Sequence[str],
        layers: int = FROZEN_LAYERS,
    ) -> None:
        self._encoder = encoder
        self._layers = layers
        self._states: list[torch.Tensor] = [torch.empty(0)] * len(texts)
        lower = _lower_part(encoder.transformer, layers)
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        was_training = encoder.transformer.training
        encoder.transformer.eval()  # no dropout: the states every epoch sees, as served
        with torch.no_grad():
            for start in range(0, len(order), CACHE_BATCH):
                rows = order[start : start + CACHE_BATCH]
                batch = _tokens(encoder, [texts[index] for index in rows])
                states = lower(**batch).last_hidden_state.float()
                lengths = batch["attention_mask"].sum(dim=1).tolist()
                for row, index in enumerate(rows):
                    self._states[index] = states[row, : int(lengths[row])].clone()
        encoder.transformer.train(was_training)

    def __len__(self) -> int:
        return len(self._states)

    @torch.no_grad()
    def embed_all(self, on_cpu: bool = True) -> torch.Tensor:
        """Every text's embedding, without gradients, in batches of CACHE_BATCH texts.

        On the CPU in float32 (``on_cpu``), or where the encoder is, in the caller's autocast.
        The encoder computes as it serves (no dropout) and is left in the mode it was in.
        """
        was_training = self._encoder.transformer.training
        self._encoder.transformer.eval()
        rows = range(len(self))
        parts = [self.embed(rows[start : start + CACHE_BATCH]) for start in rows[::CACHE_BATCH]]
        self._encoder.transformer.train(was_training)
        embeddings = torch.cat(parts) if parts else torch.zeros(0, pretrained.DIMENSIONS)
        return embeddings.float().cpu() if on_cpu else embeddings

    def embed(self, rows: Sequence[int]) -> torch.Tensor:
        """Unit-length embeddings of the texts at ``rows``, through the upper layers.

        Gradients flow into the upper layers when enabled; the result equals the whole encoder's
        embedding of those texts (to float rounding).
        """
        parts = [self._states[index] for index in rows]
        packing = Packing([len(part) for part in parts], self._encoder.device)
        tokens = packing.packed(parts)
        for layer in self._encoder.transformer.encoder.layer[self._layers :]:
            tokens = packed_layer(layer, tokens, packing)
        return nn.functional.normalize(packing.mean(tokens.float()), dim=-1)


class Packing:
    """The real tokens of a batch of texts, packed end to end, shortest text first.

    Customer messages differ in length: padded to its longest text, a random batch of Banking77
    is 35 to 45% real tokens. Every part of a transformer layer but attention works token by
    token, so it runs on the packed tokens alone. Attention pads them, group by group of
    ``group_size`` texts of similar length (AttentionGroup), each to its own longest text: its
    cost grows with the square of that length, and one long text no longer pads the whole
    batch. The packed rows are rounded up to a multiple of ``row_multiple`` (ROW_MULTIPLE): the
    rows after the real tokens are computed too, and never read.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        device: torch.device,
        row_multiple: int = ROW_MULTIPLE,
        group_size: int = ATTENTION_GROUP,
    ) -> None:
        self.texts = len(lengths)
        self._device = device
        self._order = sorted(range(self.texts), key=lambda text: lengths[text])
        by_length = [lengths[text] for text in self._order]
        self.tokens = sum(lengths)
        """Real tokens; the packed rows after them are spare."""
        self.rows = -(-self.tokens // row_multiple) * row_multiple
        self.groups: list[AttentionGroup] = []
        start = 0
        for first in range(0, self.texts, group_size):
            self.groups.append(AttentionGroup(by_length[first : first + group_size], start, device))
            start = self.groups[-1].end
        # Each packed token's text, numbered as the caller numbers them: pooling needs no reorder.
        order = torch.tensor(self._order)
        self._text_of_token = torch.repeat_interleave(order, torch.tensor(by_length)).to(device)
        self._counts = torch.tensor(list(lengths)).to(device)

    def packed(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """The texts' tokens (each its length x width) in packing order, then the spare rows."""
        spare = parts[0].new_zeros(self.rows - self.tokens, parts[0].shape[-1])
        return torch.cat([*(parts[text] for text in self._order), spare]).to(self._device)

    def joined(self, groups: Sequence[torch.Tensor]) -> torch.Tensor:
        """The groups' packed tokens (AttentionGroup.unpad) as the batch's, spare rows after."""
        spare = groups[0].new_zeros(self.rows - self.tokens, groups[0].shape[-1])
        return torch.cat([*groups, spare])

    def mean(self, tokens: torch.Tensor) -> torch.Tensor:
        """Each text's mean token (texts x width, in the caller's order): the encoder's pooling."""
        sums = tokens.new_zeros(self.texts, tokens.shape[-1])
        real = tokens[: self.tokens]
        return sums.index_add(0, self._text_of_token, real) / self._counts[:, None]


class AttentionGroup:
    """Texts packed side by side (tokens ``start`` to ``end``), and where each sits when padded."""

    def __init__(self, lengths: Sequence[int], start: int, device: torch.device) -> None:
        self.texts = len(lengths)
        self.longest = max(lengths)
        self.start, self.end = start, start + sum(lengths)
        counts = torch.tensor(list(lengths))
        real = torch.arange(self.longest)[None, :] < counts[:, None]
        self.mask = real.to(device)
        """texts x longest: True where a token is real."""
        self._slots = real.flatten().nonzero().squeeze(1).to(device)

    def pad(self, tokens: torch.Tensor) -> torch.Tensor:
        """The group's tokens of the packed ones as texts x longest x width, zeros after each."""
        padded = tokens.new_zeros(self.texts * self.longest, tokens.shape[-1])
        mine = tokens[self.start : self.end]
        return padded.index_copy(0, self._slots, mine).view(self.texts, self.longest, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """The inverse of ``pad``: the group's real tokens, packed."""
        return padded.reshape(self.texts * self.longest, -1).index_select(0, self._slots)


def packed_layer(layer: Any, tokens: torch.Tensor, packing: Packing) -> torch.Tensor:
    """One BERT layer (transformers' BertLayer, through its own modules) on packed tokens.

    The same operations as the layer's forward, in the same order: the projections, the output
    blocks and the feed-forward part on the real tokens only; attention over each text's own
    tokens as transformers' eager attention computes it (softmax in float32, dropout on its
    weights when training), one group of texts at a time.
    """
    attention = layer.attention.self
    heads, size = attention.num_attention_heads, attention.attention_head_size
    projected = [attention.query(tokens), attention.key(tokens), attention.value(tokens)]
    contexts = []
    for group in packing.groups:
        # texts x heads x longest x size
        query, key, value = (
            group.pad(part).view(group.texts, group.longest, heads, size).transpose(1, 2)
            for part in projected
        )
        scores = (query @ key.transpose(-1, -2)) * attention.scaling
        scores = scores.masked_fill(~group.mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
        context = (attention.dropout(weights) @ value).transpose(1, 2)
        contexts.append(group.unpad(context.reshape(group.texts, group.longest, heads * size)))
    attended = layer.attention.output(packing.joined(contexts), tokens)
    return layer.output(layer.intermediate(attended), attended)


def _tokens(encoder: pretrained.SentenceEncoder, texts: list[str]) -> dict[str, torch.Tensor]:
    tokens = pretrained.tokenize(encoder.tokenizer, texts)
    return {name: tensor.to(encoder.device) for name, tensor in tokens.items()}


def _lower_part(transformer: Any, layers: int) -> nn.Module:
    """The transformer with only its first ``layers`` layers: a view sharing their weights.

    Shallow copies with their own module tables, so the encoder itself keeps all its layers.
    """
    lower = copy.copy(transformer)
    lower._modules = dict(transformer._modules)
    stack = copy.copy(transformer.encoder)
    stack._modules = dict(transformer.encoder._modules)
    stack.layer = nn.ModuleList(list(transformer.encoder.layer[:layers]))
    lower.encoder = stack
    return lower
