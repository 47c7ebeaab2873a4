"""The encoder of an encoder agent served on a CUDA GPU, in mixed precision where it agrees.

On the CPU, encoder_runtime.py serves (ONNX Runtime, torch in bfloat16 for batches). On a GPU
the torch encoder itself runs there: its matrix products under autocast (bfloat16 where the GPU
has it, else float16), pooling and normalisation in float32. Each load compares the embeddings
of two probe texts in that precision with float32 on the same GPU; past AGREEMENT it serves
float32, with a warning, so that a version never answers far from what it was measured with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from agent_training_server.engines import precision, pretrained

log = logging.getLogger(__name__)

BATCH_SIZE = 64
AGREEMENT = 1e-2
"""Largest difference between mixed and float32 embeddings of the probe texts (components of
a unit vector; 16-bit products keep 8 to 11 significant bits)."""
_PROBES = ("a", "where is my new card? it has not arrived yet " * 8)
"""Two lengths in one batch, the longer truncated: the check covers padding and truncation."""


class CudaRuntime:
    """The sentence encoder on a GPU: texts in, unit-length float32 embeddings (numpy) out."""

    def __init__(self, encoder: pretrained.SentenceEncoder, device: str) -> None:
        """Takes ``encoder`` over: it is moved to ``device`` (``cuda:N``)."""
        self._encoder = encoder.eval().to(torch.device(device))
        self._mixed = precision.for_device(device)
        if self._mixed.name != precision.FLOAT32:
            float32 = precision.Precision(self._mixed.device, precision.FLOAT32)
            gap = float(
                np.abs(self._embed(_PROBES, self._mixed) - self._embed(_PROBES, float32)).max()
            )
            if gap > AGREEMENT:
                log.warning(
                    "%s embeddings differ from float32 by %.3g on %s; serving float32",
                    self._mixed.name,
                    gap,
                    device,
                )
                self._mixed = float32
        self.name = f"torch-{self._mixed.device_name}-{self._mixed.name}"
        """Which runtime serves, e.g. ``torch-cuda:0-bfloat16``."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, batched by length; rows in the order of ``texts``."""
        return self._embed(texts, self._mixed)

    def _embed(self, texts: Sequence[str], how: precision.Precision) -> np.ndarray:
        with torch.inference_mode(), how.autocast():
            return self._encoder.embed(list(texts), batch_size=BATCH_SIZE).numpy()
