"""An ONNX model of a version's scorer, for export bundles: features of texts in, probabilities out.

The model reproduces the version's ``predict_proba`` (the probabilities InvokeAgent starts from),
so that a bundle can be scored where the service does not run. Its inputs are what a user can
compute anywhere:

- n-gram models (supervised, reinforcement, and transfer's companion): ``ngram_ids`` and
  ``ngram_counts``, the hashed n-grams of each text and their counts (engines/ngram_features.py,
  shipped in the bundle). The graph looks the ids up in the version's vocabulary (unknown ones
  weigh nothing), weighs them by sublinear tf x idf, L2-normalises words and characters apart,
  and applies the linear layer and a softmax, as SupervisedPredictor does.
- encoder models (few_shot, transfer): ``input_ids`` and ``attention_mask`` from the encoder's
  tokenizer (shipped in the bundle); the graph runs the fine-tuned transformer, mean-pools over
  the mask, L2-normalises, applies the head and a softmax, as FewShotPredictor does. transfer
  versions take both kinds of inputs and average the two models' probabilities.

Two outputs: ``probabilities``, the model's, and ``confidences``, after the version's behaviour
settings that reshape them (temperature, disabled outputs): the argmax of ``confidences`` is
InvokeAgent's answer where no threshold turns it into the fallback.

Every model is checked before it is handed out: ONNX Runtime must reproduce the torch and numpy
reference on probe texts within AGREEMENT, else the version is reported as not exportable.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agent_training_server.engines import (
    encoder_runtime,
    few_shot,
    ngram_features,
    out_of_scope,
    pretrained,
)
from agent_training_server.engines import supervised as ngram_model

OPSET = encoder_runtime.OPSET
"""The traced encoder's opset: the combined graph has one."""
ML_OPSET = 3
"""ai.onnx.ml's version, for LabelEncoder (the vocabulary lookup)."""
IR_VERSION = 8
"""The ONNX file format of opset 17: readable by ONNX Runtime 1.14 and later."""
AGREEMENT = 1e-4
"""Largest difference allowed between ONNX Runtime's probabilities and the reference's."""
PROBES = (
    "where is my new card?",
    "I want to top up by bank transfer but it keeps failing, what is going on",
    "a",
    "why was I charged twice for the same purchase? " * 8,  # past MAX_TOKENS: truncated
)
PROBABILITIES = "probabilities"
CONFIDENCES = "confidences"


class NotExportable(Exception):
    """The version's model cannot be written as ONNX; the message says why, in a user's words."""


@dataclasses.dataclass(frozen=True)
class OnnxScorer:
    """An exported scorer: the model's bytes and what its inputs and outputs are."""

    model: bytes
    inputs: list[dict[str, Any]]
    """Name, type, shape and how to make each input."""
    outputs: list[dict[str, Any]]
    tokenizer_files: dict[str, bytes]
    """The encoder's tokenizer as ``save_pretrained`` writes it, by file name; empty for
    models without token inputs."""
    ngram_settings: dict[str, int] | None
    """The n-gram hashing settings (engines/ngram_features.py), for n-gram models."""
    probe_difference: float
    """Largest difference from the reference measured on the probe texts."""


def build(
    spec: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    temperature: float = 1.0,
    disabled_outputs: Sequence[str] = (),
) -> OnnxScorer:
    """The ONNX scorer of a version's model (its spec and tensors, as loaded and checked).

    Raises:
        NotExportable: the model's kind has no ONNX form, onnx or onnxruntime is not
            installed, or the exported model does not reproduce the reference.
    """
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise NotExportable(
            "the server has no onnx and onnxruntime packages (agent-training[pretrained])"
        ) from None
    parts = _parts(spec, tensors)
    graph = _combined(parts)
    _add_behaviour(graph, list(spec["outputs"]), temperature, disabled_outputs)
    opsets = [onnx.helper.make_opsetid("", OPSET)]
    if any(part.ngram_settings for part in parts):
        opsets.append(onnx.helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    model = onnx.helper.make_model(graph, opset_imports=opsets, producer_name="agent-training")
    model.ir_version = IR_VERSION  # make_model writes its own newest, which older readers refuse
    onnx.helper.set_model_props(model, {"outputs": "\n".join(spec["outputs"])})
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    difference = _probe_difference(onnxruntime, data, parts)
    if not difference <= AGREEMENT:  # also refuses NaN
        raise NotExportable(
            f"the ONNX model's probabilities differ from the service's by {difference:.2g}"
        )
    settings = next((part.ngram_settings for part in parts if part.ngram_settings), None)
    return OnnxScorer(
        model=data,
        inputs=[entry for part in parts for entry in part.inputs],
        outputs=_output_entries(len(spec["outputs"])),
        tokenizer_files=_tokenizer_files(parts),
        ngram_settings=settings,
        probe_difference=difference,
    )


@dataclasses.dataclass
class _Part:
    """One model of the scorer as a graph: its nodes, weights, inputs and reference."""

    graph: Any
    """onnx.GraphProto whose one output is the part's probabilities."""
    inputs: list[dict[str, Any]]
    reference: Any
    """texts -> probabilities, the service's own computation."""
    feeds: Any
    """texts -> the part's ONNX inputs."""
    ngram_settings: dict[str, int] | None = None
    tokenizer: Any = None


def _parts(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> list[_Part]:
    kind = spec.get("kind")
    if kind == ngram_model.KIND:
        return [_ngram_part(spec, tensors, "")]
    if kind == few_shot.KIND:
        parts = [_encoder_part(spec, tensors)]
        if "ngrams" in spec:  # transfer's companion
            companion = {
                name.removeprefix("ngrams."): tensor
                for name, tensor in tensors.items()
                if name.startswith("ngrams.")
            }
            parts.append(_ngram_part(spec["ngrams"], companion, "ngrams/"))
        return parts
    raise NotExportable(f"models of kind {kind!r} have no ONNX form")


def _combined(parts: list[_Part]) -> Any:
    """One graph of the parts: their probabilities, averaged when there are two."""
    from onnx import helper

    graph = parts[0].graph
    for part in parts[1:]:
        graph.input.extend(part.graph.input)
        graph.initializer.extend(part.graph.initializer)
        graph.node.extend(part.graph.node)
    if len(parts) == 1:
        graph.node.append(helper.make_node("Identity", [graph.output[0].name], [PROBABILITIES]))
    else:
        names = [part.graph.output[0].name for part in parts]
        graph.node.append(helper.make_node("Sum", names, ["sum_of_probabilities"]))
        graph.initializer.append(_constant("half", np.float32(0.5)))
        graph.node.append(
            helper.make_node("Mul", ["sum_of_probabilities", "half"], [PROBABILITIES])
        )
    del graph.output[:]
    graph.output.append(_float_output(PROBABILITIES))
    graph.name = "agent_training_scorer"
    return graph


def _add_behaviour(
    graph: Any, outputs: list[str], temperature: float, disabled_outputs: Sequence[str]
) -> None:
    """Append the ``confidences`` output: InvokeAgent's reshaping of the probabilities.

    As services/inference.apply_behavior: probabilities clipped to [1e-12, 1] raised to
    1 / temperature (when it is not 1), disabled outputs zeroed, then renormalised.
    """
    from onnx import helper

    current = PROBABILITIES
    if temperature != 1.0:
        graph.initializer.extend(
            [
                _constant("clip_low", np.float32(1e-12)),
                _constant("clip_high", np.float32(1.0)),
                _constant("inverse_temperature", np.float32(1.0 / temperature)),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("Clip", [current, "clip_low", "clip_high"], ["clipped"]),
                helper.make_node("Pow", ["clipped", "inverse_temperature"], ["tempered"]),
            ]
        )
        current = "tempered"
    disabled = set(disabled_outputs)
    if disabled:
        mask = np.array([0.0 if name in disabled else 1.0 for name in outputs], np.float32)
        graph.initializer.append(_constant("enabled_outputs", mask))
        graph.node.append(helper.make_node("Mul", [current, "enabled_outputs"], ["enabled"]))
        current = "enabled"
    if current == PROBABILITIES:
        graph.node.append(helper.make_node("Identity", [current], [CONFIDENCES]))
    else:
        graph.initializer.append(_constant("last_axis", np.array([-1], np.int64)))
        graph.node.extend(
            [
                helper.make_node("ReduceSum", [current, "last_axis"], ["total"], keepdims=1),
                helper.make_node("Div", [current, "total"], [CONFIDENCES]),
            ]
        )
    graph.output.append(_float_output(CONFIDENCES))


def _ngram_part(spec: dict[str, Any], tensors: dict[str, torch.Tensor], prefix: str) -> _Part:
    """The hashed n-gram linear model (engines/supervised.py) as a graph of padded id rows."""
    from onnx import TensorProto, helper

    settings = {key: int(value) for key, value in spec["features"].items()}
    weight = tensors["weight"] if "weight" in tensors else ngram_model.dequantized(tensors)
    vocabulary = tensors["vocabulary"].numpy().astype(np.int64)

    def name(text: str) -> str:
        return f"{prefix}{text}"

    initializers = [
        _constant(name("idf"), tensors["idf"].numpy().astype(np.float32)),
        _constant(name("weight"), weight.numpy().astype(np.float32)),
        _constant(name("bias"), tensors["bias"].numpy().astype(np.float32)),
        _constant(name("word_buckets"), np.int64(settings["word_buckets"])),
        _constant(name("one"), np.float32(1.0)),
        _constant(name("zero"), np.int64(0)),
        _constant(name("none"), np.int64(-1)),
        _constant(name("epsilon"), np.float32(1e-12)),
        _constant(name("terms_axis"), np.array([1], np.int64)),
    ]
    nodes = _ngram_nodes(name, vocabulary)
    inputs = [
        helper.make_tensor_value_info("ngram_ids", TensorProto.INT64, ["texts", "terms"]),
        helper.make_tensor_value_info("ngram_counts", TensorProto.FLOAT, ["texts", "terms"]),
    ]
    output = _float_output(name("ngram_probabilities"))
    graph = helper.make_graph(nodes, "ngrams", inputs, [output], initializer=initializers)
    predictor = ngram_model.SupervisedPredictor(spec, tensors)
    return _Part(
        graph=graph,
        inputs=_ngram_input_entries(settings),
        reference=predictor.predict_proba,
        feeds=lambda texts: dict(
            zip(
                ("ngram_ids", "ngram_counts"),
                ngram_features.ngram_arrays(texts, settings),
                strict=True,
            )
        ),
        ngram_settings=settings,
    )


def _ngram_nodes(name: Callable[[str], str], vocabulary: np.ndarray) -> list[Any]:
    """The n-gram model's computation, from the padded ids and counts to its probabilities."""
    from onnx import TensorProto, helper

    return [
        # Vocabulary position of each id; -1 for ids training never saw (and for padding).
        helper.make_node(
            "LabelEncoder",
            ["ngram_ids"],
            [name("position")],
            domain="ai.onnx.ml",
            keys_int64s=vocabulary.tolist(),
            values_int64s=list(range(len(vocabulary))),
            default_int64=-1,
        ),
        helper.make_node("Greater", [name("position"), name("none")], [name("known_flag")]),
        helper.make_node("Cast", [name("known_flag")], [name("known")], to=TensorProto.FLOAT),
        helper.make_node("Max", [name("position"), name("zero")], [name("row")]),
        # Sublinear tf x idf: (1 + log count) x idf, zero for unknown ids.
        helper.make_node("Max", ["ngram_counts", name("one")], [name("count")]),
        helper.make_node("Log", [name("count")], [name("log_count")]),
        helper.make_node("Add", [name("log_count"), name("one")], [name("tf")]),
        helper.make_node("Gather", [name("idf"), name("row")], [name("row_idf")]),
        helper.make_node("Mul", [name("tf"), name("row_idf")], [name("tf_idf")]),
        helper.make_node("Mul", [name("tf_idf"), name("known")], [name("raw")]),
        # Words and characters are L2-normalised apart: a word id is below word_buckets.
        helper.make_node("Less", ["ngram_ids", name("word_buckets")], [name("word_flag")]),
        helper.make_node("Cast", [name("word_flag")], [name("is_word")], to=TensorProto.FLOAT),
        helper.make_node("Sub", [name("one"), name("is_word")], [name("is_char")]),
        helper.make_node("Mul", [name("raw"), name("raw")], [name("squared")]),
        *_block_norm(name, "is_word", "word_norm"),
        *_block_norm(name, "is_char", "char_norm"),
        helper.make_node("Mul", [name("is_word"), name("word_norm")], [name("word_part")]),
        helper.make_node("Mul", [name("is_char"), name("char_norm")], [name("char_part")]),
        helper.make_node("Add", [name("word_part"), name("char_part")], [name("norm")]),
        helper.make_node("Div", [name("raw"), name("norm")], [name("feature_weight")]),
        # The linear layer: each text's weighted sum of its ids' weight rows, plus the bias.
        helper.make_node("Gather", [name("weight"), name("row")], [name("rows")]),
        helper.make_node(
            "Unsqueeze", [name("feature_weight"), name("terms_axis")], [name("weights_row")]
        ),
        helper.make_node("MatMul", [name("weights_row"), name("rows")], [name("summed")]),
        helper.make_node("Squeeze", [name("summed"), name("terms_axis")], [name("scores")]),
        helper.make_node("Add", [name("scores"), name("bias")], [name("logits")]),
        helper.make_node("Softmax", [name("logits")], [name("ngram_probabilities")], axis=-1),
    ]


def _block_norm(name: Callable[[str], str], block: str, result: str) -> list[Any]:
    """Nodes of each text's L2 norm over one block's terms (at least 1e-12), shape (texts, 1)."""
    from onnx import helper

    return [
        helper.make_node("Mul", [name("squared"), name(block)], [name(f"{block}_squared")]),
        helper.make_node(
            "ReduceSum",
            [name(f"{block}_squared"), name("terms_axis")],
            [name(f"{block}_sum")],
            keepdims=1,
        ),
        helper.make_node("Sqrt", [name(f"{block}_sum")], [name(f"{block}_length")]),
        helper.make_node("Max", [name(f"{block}_length"), name("epsilon")], [name(result)]),
    ]


class _EncoderScorer(nn.Module):
    """Tokens in, the encoder model's probabilities out: what the exporter traces."""

    def __init__(self, model: few_shot.CosineClassifier) -> None:
        super().__init__()
        self.transformer = model.encoder.transformer
        self.head = model.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Probabilities of a padded batch of token ids."""
        states = self.transformer(input_ids=input_ids, attention_mask=attention_mask)[0]
        embeddings = pretrained.mean_pooled(states, attention_mask)
        return torch.softmax(self.head(embeddings), dim=-1)


def _encoder_part(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> _Part:
    """The fine-tuned encoder and its head (engines/few_shot.py), exported from torch."""
    import onnx

    model = few_shot.CosineClassifier(pretrained.SentenceEncoder(), len(spec["outputs"]))
    model.load_state_dict(
        {
            name: tensor
            for name, tensor in tensors.items()
            if not name.startswith(("ngrams.", out_of_scope.PREFIX))
        }
    )
    scorer = _EncoderScorer(model).eval()
    tokenizer = model.encoder.tokenizer
    graph = onnx.load_from_string(_traced(scorer, tokenizer)).graph

    @torch.no_grad()
    def reference(texts: Sequence[str]) -> np.ndarray:
        tokens = pretrained.tokenize(tokenizer, texts)
        return scorer(tokens["input_ids"], tokens["attention_mask"]).numpy()

    def feeds(texts: Sequence[str]) -> dict[str, np.ndarray]:
        tokens = pretrained.tokenize(tokenizer, texts, "np")
        return {name: tokens[name].astype(np.int64) for name in ("input_ids", "attention_mask")}

    return _Part(
        graph=graph,
        inputs=_token_input_entries(),
        reference=reference,
        feeds=feeds,
        tokenizer=tokenizer,
    )


def _traced(scorer: _EncoderScorer, tokenizer: Any) -> bytes:
    """The encoder scorer as ONNX, traced as the serving encoder is (encoder_runtime)."""
    return encoder_runtime.trace_to_onnx(scorer, tokenizer, "encoder_probabilities", {0: "texts"})


def _probe_difference(onnxruntime: Any, model: bytes, parts: list[_Part]) -> float:
    """Largest difference between ONNX Runtime's probabilities and the parts' reference."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    texts = list(PROBES)
    feeds: dict[str, np.ndarray] = {}
    for part in parts:
        feeds.update(part.feeds(texts))
    (probabilities,) = session.run([PROBABILITIES], feeds)
    expected = sum(part.reference(texts) for part in parts) / len(parts)
    return float(np.abs(probabilities - expected).max())


def _tokenizer_files(parts: list[_Part]) -> dict[str, bytes]:
    """The files of the parts' tokenizer (one at most), as transformers saves them."""
    tokenizer = next((part.tokenizer for part in parts if part.tokenizer is not None), None)
    if tokenizer is None:
        return {}
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        return {path.name: path.read_bytes() for path in sorted(Path(folder).iterdir())}


def _constant(name: str, value: Any) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value), name)


def _float_output(name: str) -> Any:
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["texts", "outputs"])


def _ngram_input_entries(settings: dict[str, int]) -> list[dict[str, Any]]:
    how = (
        "each text's distinct hashed n-gram ids (ngram_features.py in this bundle, with the"
        " settings below), one row per text, padded with -1 to the longest row"
    )
    return [
        {
            "name": "ngram_ids",
            "type": "int64",
            "shape": ["texts", "terms"],
            "how": how,
            "features": settings,
        },
        {
            "name": "ngram_counts",
            "type": "float32",
            "shape": ["texts", "terms"],
            "how": "how often each id of ngram_ids occurs in its text; 0 where padded",
        },
    ]


def _token_input_entries() -> list[dict[str, Any]]:
    how = (
        "the tokenizer in tokenizer/ (e.g. transformers.AutoTokenizer.from_pretrained), texts"
        f" padded to the longest and truncated at {pretrained.MAX_TOKENS} tokens"
    )
    return [
        {
            "name": "input_ids",
            "type": "int64",
            "shape": ["texts", "tokens"],
            "how": how,
            "max_tokens": pretrained.MAX_TOKENS,
        },
        {
            "name": "attention_mask",
            "type": "int64",
            "shape": ["texts", "tokens"],
            "how": "the tokenizer's attention mask: 1 for tokens, 0 for padding",
        },
    ]


def _output_entries(outputs: int) -> list[dict[str, Any]]:
    return [
        {
            "name": PROBABILITIES,
            "type": "float32",
            "shape": ["texts", outputs],
            "what": "the model's probability of each output, in the manifest's output order",
        },
        {
            "name": CONFIDENCES,
            "type": "float32",
            "shape": ["texts", outputs],
            "what": "the probabilities after the version's temperature and disabled outputs:"
            " InvokeAgent's confidences; the answer is the output of the largest",
        },
    ]
