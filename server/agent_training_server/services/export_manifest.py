"""An export bundle's manifest.json: what the version is, and what each file is and how to use it.

The manifest is the bundle's documentation for a reader that has only the bundle: the version's
identity and lineage, its outputs in the model's order, its behaviour settings, the replay
manifest (seed, data hash, configuration, package version, device, precision), its metrics, its
encoder, and for each file its size, SHA-256 and use; for ``model.onnx`` its inputs and outputs,
and the steps from the model's confidences to the service's answer. Keys are sorted, so the
same version gives the same bytes.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

from agent_training_server.domain import AgentVersion

if TYPE_CHECKING:
    import torch

    from agent_training_server.engines.onnx_scorer import OnnxScorer

BUNDLE_FORMAT = "agent-training-bundle/1"

_DESCRIPTIONS = {
    "model.safetensors": "the version's weights, as the service stores them (safetensors; its"
    " metadata holds their SHA-256 under integrity.sha256)",
    "spec.json": "the version's model description, as the service stores it: its kind, its"
    " outputs and its feature settings; the service rebuilds the model from it and the weights",
    "model.onnx": "an ONNX model of the scorer: the inputs' features in, each output's"
    " probability out (see onnx)",
    "ngram_features.py": "computes the ngram_ids and ngram_counts inputs of model.onnx from"
    " texts (Python's standard library and numpy only): ngram_arrays(texts, settings) with the"
    " settings of onnx.inputs' ngram_ids",
}


def manifest_of(
    version: AgentVersion,
    spec: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    scorer: OnnxScorer | None,
    onnx_reason: str,
    digests: dict[str, str],
) -> bytes:
    """manifest.json's bytes for a bundle of these files (``digests``: name -> SHA-256)."""
    manifest = {
        "format": BUNDLE_FORMAT,
        "agent_id": version.agent_id,
        "version_id": version.version_id,
        "version_number": version.version_number,
        "training_type": version.training_type,
        "source": version.source,
        "description": version.description,
        "training_id": version.training_id,
        "parent_version_id": version.parent_version_id,
        "create_time": _iso(version.create_time),
        "model_kind": spec.get("kind", ""),
        "outputs": list(version.outputs),
        "behavior": version.behavior.to_json(),
        "replay": version.manifest,
        "metrics": version.metrics,
        "encoder": version.encoder,
        "files": _files(digests, tensors),
        "onnx": _onnx(version, scorer, onnx_reason),
        "out_of_scope": _out_of_scope(spec),
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def _files(digests: dict[str, str], tensors: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Each file after the manifest, in archive order: its use, size and SHA-256."""
    files: list[dict[str, Any]] = [
        {"name": "manifest.json", "what": "this description of the bundle"}
    ]
    for name, digest in digests.items():
        entry: dict[str, Any] = {"name": name, "sha256": digest}
        if name.startswith("tokenizer/"):
            entry["what"] = (
                "the encoder's tokenizer (load the folder with"
                " transformers.AutoTokenizer.from_pretrained, or tokenizer.json with the"
                " tokenizers package): makes the input_ids and attention_mask of model.onnx"
            )
        else:
            entry["what"] = _DESCRIPTIONS[name]
        if name == "model.safetensors":
            entry["tensors"] = {
                tensor_name: {
                    "dtype": str(tensor.dtype).removeprefix("torch."),
                    "shape": list(tensor.shape),
                }
                for tensor_name, tensor in sorted(tensors.items())
            }
        files.append(entry)
    return files


def _onnx(version: AgentVersion, scorer: OnnxScorer | None, reason: str) -> dict[str, Any]:
    """Whether model.onnx is there (else why not), its inputs, outputs and how to answer."""
    if scorer is None:
        return {"included": False, "reason": reason}
    behavior = version.behavior
    return {
        "included": True,
        "file": "model.onnx",
        "inputs": scorer.inputs,
        "outputs": scorer.outputs,
        "probe_difference": scorer.probe_difference,
        "answer": [
            "answer = outputs[argmax(confidences)], confidence = its confidence",
            f"if confidence < behavior.confidence_threshold ({behavior.confidence_threshold})"
            f" or the out-of-scope score > behavior.out_of_scope_threshold"
            f" ({behavior.out_of_scope_threshold}), the service answers"
            f" behavior.fallback_output ({behavior.fallback_output!r}) instead",
            "behavior.exploration_rate, when above 0, makes the service answer another output"
            " at that rate (to learn from feedback); the model does not",
        ],
    }


def _out_of_scope(spec: dict[str, Any]) -> str:
    """How the service's out-of-scope score is computed (engines/out_of_scope.py)."""
    from agent_training_server.engines import few_shot, out_of_scope

    if spec.get("kind") != few_shot.KIND:
        return "1 - max(probabilities)"
    return (
        f"(1 - max(probabilities) + {out_of_scope.DISTANCE_WEIGHT:g} * distance) /"
        f" {1 + out_of_scope.DISTANCE_WEIGHT:g}, clipped to [0, 1], where distance is 1 minus"
        f" the mean cosine similarity of the input's embedding by the pretrained"
        f" all-MiniLM-L6-v2 (mean-pooled, L2-normalised; not in this bundle) to its"
        f" {out_of_scope.NEIGHBOURS} nearest rows of {out_of_scope.KNOWN_EMBEDDINGS} in"
        f" model.safetensors (1 - max(probabilities) alone where that tensor is absent)"
    )
