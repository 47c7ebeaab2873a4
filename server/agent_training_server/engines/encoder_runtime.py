"""The sentence encoder's forward pass at serving time: ONNX Runtime, or torch as a fallback.

A version's weights stay in safetensors; the ONNX model is derived from them (exported from the
loaded, possibly fine-tuned, transformer) and cached beside them as
``encoder-<weights key>-<file digest>.onnx``. The key is the SHA-256 of the encoder's tensors and
of the export settings, so a file is never used for other weights; the file digest is checked on
every load, so a damaged file is exported again rather than served. Tokenisation stays with the
fast tokenizer, and pooling, normalisation and the head are cheap numpy work around the session.

When onnxruntime is not installed, or the export or its check fails, the encoder runs on torch
and one warning says why.

On a CPU that multiplies bfloat16 in hardware (Intel AMX or AVX512-BF16), batches of
BFLOAT16_MIN_TEXTS texts or more run on torch with the transformer in bfloat16: two to three
times the texts per second of float32 at 8 to 64 texts (bench/encoder_runtime.py), the same test
accuracy to a tenth of a point. A lone text stays on float32 (ONNX Runtime), faster alone.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import secrets
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from agent_training_server.engines import integrity, precision, pretrained

log = logging.getLogger(__name__)

EXPORT_FORMAT = "1"
"""Part of the cache key: bump it when the export changes, and old files are exported again."""
OPSET = 17
BATCH_SIZE = 64
"""Texts per session run, sorted by length so that each run pads little."""
THREADS = max(1, (os.cpu_count() or 1) // 2)
"""Intra-op threads per session: half the cores, so the other half is left to the gRPC event
loop (on 2 cores, one thread: with 2, an encoder agent under load answers about a quarter more
calls, but every other call, n-gram agents and health checks, slows far more). Calls to several
versions, on several worker threads, each get threads of their own.
"""
AGREEMENT = 1e-4
"""Largest difference between the ONNX and the torch embeddings of the probe texts at load."""
BFLOAT16_MIN_TEXTS = 4
"""Batches from this size run in bfloat16 where the CPU multiplies it natively. One text runs
faster in float32 on ONNX Runtime (about 210 against 140 texts/s on one thread); from 4 texts
bfloat16 leads (300 against 220), at 8 to 64 about twice or more (370-410 against 110-200)."""
BFLOAT16_AGREEMENT = 1e-2
"""Largest difference between the bfloat16 and float32 embeddings of the probe texts at load
(components of a unit vector of 384: bfloat16 keeps 8 significant bits)."""
_PROBES = ("a", "where is my new card? it has not arrived yet " * 8)
"""Two lengths in one batch, the longer truncated: the check covers padding and truncation."""


class EncoderRuntime(Protocol):
    """Text in, unit-length embeddings out (numpy, float32), rows in the order of the texts."""

    name: str
    """``onnxruntime`` or ``torch``: which one serves."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts."""
        ...


class TorchRuntime:
    """The encoder on torch: the fallback, and the reference the ONNX export is checked against."""

    name = "torch"

    def __init__(self, encoder: pretrained.SentenceEncoder) -> None:
        self._encoder = encoder.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, batched by length."""
        with _intra_op_threads(THREADS):
            return self._encoder.embed(texts, batch_size=BATCH_SIZE).numpy()


def _pooled(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token states over the attention mask, L2-normalised, in float32."""
    weights = mask[..., None].astype(np.float32)
    pooled = (states * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.maximum(norms, 1e-12)  # as torch.nn.functional.normalize


def _by_length(texts: Sequence[str], embed_batch: Any) -> np.ndarray:
    """``embed_batch`` over batches of texts of similar length, rows in the order of ``texts``."""
    embeddings = np.zeros((len(texts), pretrained.DIMENSIONS), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    for start in range(0, len(order), BATCH_SIZE):
        rows = order[start : start + BATCH_SIZE]
        embeddings[rows] = embed_batch([texts[index] for index in rows])
    return embeddings


class BFloat16Runtime:
    """The transformer on torch in bfloat16; tokens in, float32 pooling around it."""

    name = "torch-bfloat16"

    def __init__(self, encoder: pretrained.SentenceEncoder) -> None:
        """Takes ``encoder`` over: its transformer is converted in place."""
        self._tokenizer = encoder.tokenizer
        self._transformer = encoder.transformer.eval().to(torch.bfloat16)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, batched by length."""
        return _by_length(texts, self._embed_batch)

    @torch.inference_mode()
    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        batch = pretrained.tokenize(self._tokenizer, texts)
        with _intra_op_threads(THREADS):
            states = self._transformer(**batch).last_hidden_state.float().numpy()
        return _pooled(states, batch["attention_mask"].numpy())


@contextlib.contextmanager
def _intra_op_threads(count: int) -> Iterator[None]:
    """Set the intra-op threads of torch to ``count`` for a forward pass, as ONNX Runtime has.

    torch's default (every core) oversubscribes a server whose event loop wants a core too: its
    OpenMP threads spin at every barrier, and an encoder batch then takes many times longer.
    Setting the count costs about 25 us, against milliseconds for a forward pass; a training
    worker's own count is back once the pass ends.
    """
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class SplitRuntime:
    """Small batches on one runtime (a lone text's latency), larger ones on another."""

    def __init__(self, small: EncoderRuntime, large: EncoderRuntime, min_large: int) -> None:
        self._small, self._large, self._min_large = small, large, min_large
        self.name = f"{small.name}+{large.name}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts on the runtime for their number."""
        runtime = self._large if len(texts) >= self._min_large else self._small
        return runtime.embed(texts)


class OnnxRuntime:
    """The encoder's transformer in an ONNX Runtime session; tokens and pooling around it."""

    name = "onnxruntime"

    def __init__(self, tokenizer: Any, session: Any) -> None:
        self._tokenizer = tokenizer
        self._session = session

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts, batched by length (mean pooling over the mask, L2-normalised)."""
        return _by_length(texts, self._embed_batch)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        batch = pretrained.tokenize(self._tokenizer, texts, "np")
        mask = batch["attention_mask"].astype(np.int64)
        (states,) = self._session.run(
            None, {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": mask}
        )
        return _pooled(states, mask)


class _LastHiddenState(nn.Module):
    """The transformer with plain tensor inputs and one output: what the exporter traces."""

    def __init__(self, transformer: nn.Module) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states of a padded batch."""
        return self.transformer(input_ids=input_ids, attention_mask=attention_mask)[0]


class ExportMismatch(Exception):
    """The exported model's embeddings differ from torch's."""


def load(
    encoder: pretrained.SentenceEncoder, derived_dir: Path | None, bfloat16: bool | None = None
) -> EncoderRuntime:
    """The fastest runtimes that reproduce ``encoder``: ONNX Runtime (else torch), and bfloat16.

    ``derived_dir`` (the version's artifact folder) holds the exported model across restarts;
    without it the model is exported for this load only. ``bfloat16``: whether batches of
    BFLOAT16_MIN_TEXTS or more run in bfloat16 (None: where the CPU has it natively).
    """
    small = _float32_runtime(encoder, derived_dir)
    if not (precision.native_bfloat16() if bfloat16 is None else bfloat16):
        return small
    # ONNX Runtime holds its own copy of the weights; the torch fallback needs the float32 ones.
    owned = encoder if isinstance(small, OnnxRuntime) else copy.deepcopy(encoder)
    large = BFloat16Runtime(owned)
    probes = list(_PROBES)
    difference = float(np.abs(large.embed(probes) - small.embed(probes)).max())
    if not difference <= BFLOAT16_AGREEMENT:  # also refuses NaN
        log.warning("the encoder runs in float32 only: bfloat16 differs by %.2g", difference)
        return small
    return SplitRuntime(small, large, BFLOAT16_MIN_TEXTS)


def _float32_runtime(
    encoder: pretrained.SentenceEncoder, derived_dir: Path | None
) -> EncoderRuntime:
    """ONNX Runtime, else torch (one warning says why)."""
    try:
        import onnxruntime
    except ImportError:
        log.warning("onnxruntime is not installed: the sentence encoder runs on torch")
        return TorchRuntime(encoder)
    try:
        runtime = _onnx_runtime(onnxruntime, encoder, derived_dir)
    except Exception as error:  # the exporter and onnxruntime raise many kinds
        log.warning("the sentence encoder runs on torch: its ONNX model failed (%s)", error)
        return TorchRuntime(encoder)
    return runtime


def _onnx_runtime(
    onnxruntime: Any, encoder: pretrained.SentenceEncoder, derived_dir: Path | None
) -> OnnxRuntime:
    key = weights_key(encoder)
    if derived_dir is not None and (cached := _read_cached(derived_dir, key)) is not None:
        try:
            return _checked(onnxruntime, encoder, cached)
        except Exception as error:
            log.warning("a cached ONNX encoder is refused (%s); exporting it again", error)
            for path in cached_files(derived_dir, key):
                _remove(path)
    model = _export(encoder)
    runtime = _checked(onnxruntime, encoder, model)
    if derived_dir is not None:
        _write_cached(derived_dir, key, model)
    return runtime


def _checked(onnxruntime: Any, encoder: pretrained.SentenceEncoder, model: bytes) -> OnnxRuntime:
    """A session of ``model``, refused unless it embeds as the torch encoder does."""
    runtime = OnnxRuntime(encoder.tokenizer, _session(onnxruntime, model))
    probes = list(_PROBES)
    difference = float(np.abs(runtime.embed(probes) - TorchRuntime(encoder).embed(probes)).max())
    if not difference <= AGREEMENT:  # also refuses NaN
        raise ExportMismatch(f"its embeddings differ from torch's by {difference:.2g}")
    return runtime


def weights_key(encoder: pretrained.SentenceEncoder) -> str:
    """SHA-256 of the encoder's tensors and of the export settings: the cached file's key."""
    settings = {"export_format": EXPORT_FORMAT, "opset": str(OPSET)}
    return integrity.digest(encoder.state_dict(), settings)


def cached_files(derived_dir: Path, key: str) -> list[Path]:
    """The exported models cached in ``derived_dir`` for the weights ``key``."""
    return sorted(derived_dir.glob(f"encoder-{key[:32]}-*.onnx"))


def _read_cached(derived_dir: Path, key: str) -> bytes | None:
    """A cached model whose contents match the digest in its name; damaged ones are removed."""
    for path in cached_files(derived_dir, key):
        try:
            model = path.read_bytes()
        except OSError:
            continue
        if path.stem.endswith(hashlib.sha256(model).hexdigest()[:32]):
            return model
        log.warning("a cached ONNX encoder fails its checksum; exporting it again")
        _remove(path)
    return None


def _remove(path: Path) -> None:
    """Remove a refused file; in a read-only folder it stays, and is refused again next load."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _write_cached(derived_dir: Path, key: str, model: bytes) -> None:
    """Write the model under its final name in one rename: readers never see half a file.

    Not fsync'd: a file a power loss truncates fails its digest and is exported again.
    """
    path = derived_dir / f"encoder-{key[:32]}-{hashlib.sha256(model).hexdigest()[:32]}.onnx"
    partial = derived_dir / f".{path.name}.{secrets.token_hex(4)}.partial"
    try:
        # Owner-only, as the weights it is made from (a fine-tuned encoder carries its data).
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(model)
        os.replace(partial, path)
    except OSError as error:  # a read-only or full folder: serve from memory, export next load
        _remove(partial)
        log.warning("the ONNX encoder could not be cached (%s)", error.strerror)


def _export(encoder: pretrained.SentenceEncoder) -> bytes:
    """The transformer as ONNX: token states out, dynamic batch and token axes."""
    wrapped = _LastHiddenState(encoder.transformer).eval()
    return trace_to_onnx(wrapped, encoder.tokenizer, "last_hidden_state", {0: "texts", 1: "tokens"})


def trace_to_onnx(
    module: nn.Module, tokenizer: Any, output_name: str, output_axes: dict[int, str]
) -> bytes:
    """A module of (input_ids, attention_mask) as ONNX, with dynamic text and token axes.

    The TorchScript exporter (``dynamo=False``): it needs no package beyond torch, takes about a
    second, and its graph matches torch to 1e-5; the dynamo exporter needs onnxscript and takes
    several times longer for the same graph. The example batch is padded, so the traced graph
    applies the attention mask.
    """
    example = tokenizer(["a", "a padded example"], padding=True, return_tensors="pt")
    dynamic = {0: "texts", 1: "tokens"}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        path = Path(folder) / "model.onnx"
        torch.onnx.export(
            module,
            (example["input_ids"], example["attention_mask"]),
            path,
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=[output_name],
            dynamic_axes={
                "input_ids": dynamic,
                "attention_mask": dynamic,
                output_name: output_axes,
            },
            opset_version=OPSET,
        )
        return path.read_bytes()


def _session(onnxruntime: Any, model: bytes) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    # Idle pool threads would spin for work on cores the event loop needs (with more than one).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its notices would bypass the service's log
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
