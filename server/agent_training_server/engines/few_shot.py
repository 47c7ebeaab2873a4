"""The few_shot engine: 1 to 20 examples per output, on top of the pretrained sentence encoder.

A cosine classifier whose rows start as the outputs' mean embeddings (prototypes), then the
encoder and the head are fine-tuned together with cross-entropy for a few epochs. The prototype
start gives a good classifier before the first step; fine-tuning moves the encoder's space so that
each output's examples cluster, which generalises to wordings unlike the examples.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agent_training_server import devices
from agent_training_server.engines import (
    encoder_runtime,
    frozen_layers,
    negatives,
    out_of_scope,
    precision,
    pretrained,
)
from agent_training_server.engines.base import (
    Artifact,
    Engine,
    Example,
    Predictor,
    Progress,
    Reporter,
    Scores,
    TrainingDataError,
    TrainSettings,
)
from agent_training_server.engines.evaluation import macro_f1
from agent_training_server.engines.integrity import check_shape
from agent_training_server.engines.resumable import ResumableLoop
from agent_training_server.engines.supervised import SupervisedPredictor, epoch_sums, taught

KIND = "minilm_cosine"
MAX_EXAMPLES_PER_OUTPUT = 20
HEAD_LEARNING_RATE_FACTOR = 200.0
"""The new head learns this much faster than the pretrained encoder it sits on."""
SCALE = 20.0
"""Cosine similarities are in [-1, 1]; scaled, they make confident softmax scores."""


class CosineClassifier(nn.Module):
    """Encoder plus one scaled cosine-similarity row per output."""

    def __init__(self, encoder: pretrained.SentenceEncoder, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(pretrained.DIMENSIONS, outputs)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Logits for a batch of texts."""
        return self.head(self.encoder(texts))

    @torch.no_grad()
    def start_from_prototypes(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Set each output's row to its examples' mean embedding (scaled)."""
        for label in range(self.head.out_features):
            if not bool((labels == label).any()):
                continue  # an output kept from the version being extended
            mean = embeddings[labels == label].mean(dim=0).to(self.head.weight.device)
            self.head.weight[label] = nn.functional.normalize(mean, dim=0) * SCALE
        self.head.bias.zero_()


def _check_counts(
    examples: Sequence[Example], most_per_output: int | None, known: Sequence[str] = ()
) -> None:
    counts = collections.Counter(example.expected_output for example in examples)
    if len(set(counts) | set(known)) < 2:
        raise TrainingDataError(f"the data teaches {len(counts)} output(s); at least 2 are needed")
    if most_per_output is None:
        return
    crowded = {output: n for output, n in counts.items() if n > most_per_output}
    if crowded:
        output, count = max(crowded.items(), key=lambda item: item[1])
        raise TrainingDataError(
            f"few_shot takes 1 to {MAX_EXAMPLES_PER_OUTPUT} examples per output; {output!r} has"
            f" {count}: use supervised or transfer for larger sets"
        )


def _scores(
    probabilities: np.ndarray, labels: torch.Tensor
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(mean negative log-likelihood, accuracy, truth, predictions) of probabilities.

    Over the outputs' examples: negatives are skipped.
    """
    kept = labels.numpy() != negatives.NEGATIVE
    truth = labels.numpy()[kept]
    picked = probabilities[kept][np.arange(len(truth)), truth]
    predicted = probabilities[kept].argmax(axis=1)
    return (
        float(-np.log(np.clip(picked, 1e-12, 1.0)).mean()),
        float((predicted == truth).mean()),
        truth,
        predicted,
    )


@torch.no_grad()
def _logits(model: CosineClassifier, states: frozen_layers.CachedLowerLayers) -> torch.Tensor:
    """Logits of every text of ``states``, as float32, on the encoder's device."""
    return model.head(states.embed_all(on_cpu=False)).float()


@torch.no_grad()
def _evaluate(
    model: CosineClassifier, states: frozen_layers.CachedLowerLayers, labels: torch.Tensor
) -> tuple:
    kept = labels != negatives.NEGATIVE  # the outputs' examples
    logits = _logits(model, states)[kept.to(model.head.weight.device)]
    labels = labels[kept].to(logits.device)
    loss = nn.functional.cross_entropy(logits, labels).item()
    predicted = logits.argmax(dim=1)
    return loss, (predicted == labels).float().mean().item(), predicted.cpu().numpy()


class FewShotEngine(Engine):
    """Learns outputs from a handful of examples each."""

    training_type = "few_shot"
    most_examples_per_output: int | None = MAX_EXAMPLES_PER_OUTPUT
    starts_from_version = True
    frozen_lower_layers = frozen_layers.FROZEN_LAYERS
    """The encoder's lowest layers kept as training starts (engines/frozen_layers.py)."""

    def _companion_model(
        self,
        examples: Sequence[Example],
        settings: TrainSettings,
        reporter: Reporter,
        workdir: Path,
        deadline: float,
    ) -> Artifact | None:
        """A second model whose probabilities are averaged with the encoder's (none here)."""
        return None

    def _extension(self, start_from: tuple[dict[str, Any], Any] | None) -> list[str]:
        """Outputs of the version being extended: few_shot adds outputs to a few_shot agent."""
        if start_from is None or start_from[0].get("kind") != KIND:
            return []
        return list(start_from[0]["outputs"])

    def _pretrained_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """The pretrained encoder's embeddings of ``texts`` (cached across jobs).

        For a job whose encoder starts from a version's fine-tuned one.
        """
        return pretrained.cached_embeddings(
            texts, self.cache_dir, compute=lambda: pretrained.SentenceEncoder().embed(texts)
        )

    def train(
        self,
        examples: Sequence[Example],
        settings: TrainSettings,
        reporter: Reporter,
        workdir: Path,
        start_from: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None,
    ) -> Artifact:
        """Fine-tune encoder and head; a checkpoint per epoch; early stopping when validated.

        ``start_from`` (spec, tensors) of an encoder version: transfer reuses its fine-tuned
        encoder and trains a new head; few_shot *extends* it (see ``_extension``).
        """
        started = time.monotonic()
        deadline = started + settings.max_duration_seconds
        reporter.progress(Progress(phase="loading_data"))
        examples = taught(examples)
        if self.training_type == "few_shot" and start_from and start_from[0].get("kind") != KIND:
            start_from = None  # an n-gram version has no encoder to extend: start afresh
        known = self._extension(start_from)
        taught_outputs = {e.expected_output for e in examples} - {settings.negative_output}
        _check_counts(
            [e for e in examples if e.expected_output in taught_outputs],
            self.most_examples_per_output,
            known,
        )
        outputs = known + sorted(taught_outputs - set(known))
        # Only new outputs: the existing ones keep their rows untouched, the new ones get their
        # prototypes, and no step is taken (a step on new outputs alone would erode the old).
        epochs = 0 if known and not set(known) & taught_outputs else settings.epochs
        labels = negatives.labels_of(
            [e.expected_output for e in examples], outputs, settings.negative_output
        )
        train_rows, valid_rows = negatives.split(labels, settings.validation_split, settings.seed)
        texts = [example.input for example in examples]
        train_texts = [texts[i] for i in train_rows]
        valid_texts = [texts[i] for i in valid_rows]
        train_y = torch.from_numpy(labels[train_rows])
        valid_y = torch.from_numpy(labels[valid_rows])

        # Phase: the encoder. Loading it and embedding the examples takes seconds to tens of
        # seconds (cold start): say so rather than sit at loading_data.
        reporter.progress(Progress(phase="loading_encoder"))
        torch.manual_seed(settings.seed)
        mixed = precision.for_device(devices.resolve(settings.device))
        model = CosineClassifier(pretrained.SentenceEncoder(), len(outputs))
        # Moved before the prototypes: the examples embed on the device (in float32 there too,
        # so the cached pretrained embeddings are the same whichever device made them).
        model.to(mixed.device)
        if start_from is not None:
            load_encoder(model, *start_from)
        # The lower layers' output for each text, once: steps run only the upper layers.
        train_states = frozen_layers.CachedLowerLayers(
            model.encoder, train_texts, self.frozen_lower_layers
        )
        valid_states = (
            train_states
            if valid_rows is train_rows
            else frozen_layers.CachedLowerLayers(
                model.encoder, valid_texts, self.frozen_lower_layers
            )
        )
        # The prototypes: the encoder's embeddings of the examples, the upper layers run over
        # the cached lower ones. Pretrained weights embed the same data the same, so earlier
        # jobs' embeddings are reused; a fine-tuned encoder's are its own.
        if start_from is not None:
            initial = train_states.embed_all()
        else:
            initial = pretrained.cached_embeddings(
                train_texts, self.cache_dir, compute=train_states.embed_all
            )
        # The pretrained space, where out-of-scope distances are measured (out_of_scope.py).
        known_embeddings = (
            initial if start_from is None else self._pretrained_embeddings(train_texts)
        )[negatives.positive(train_y)]  # negatives are what the agent is *not* trained on
        model.start_from_prototypes(initial, train_y)
        if known and start_from is not None:  # known outputs come from start_from
            with torch.no_grad():
                model.head.weight[: len(known)] = start_from[1]["head.weight"].to(mixed.device)
                model.head.bias[: len(known)] = start_from[1]["head.bias"].to(mixed.device)
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": frozen_layers.upper_parameters(
                        model.encoder, self.frozen_lower_layers
                    ),
                    "lr": settings.learning_rate,
                },
                {
                    "params": model.head.parameters(),
                    "lr": settings.learning_rate * HEAD_LEARNING_RATE_FACTOR,
                },
            ],
            weight_decay=0.01,
            # One kernel for all the weights: 5.5 against 17.6 ms a step of batch 16 (for_each).
            fused=True,
        )
        batch_size = settings.batch_size or 16
        # Data-parallel (engines/parallel.py): every process has built the same model, prototypes
        # and cached states above from the same seed (duplicate work, seconds, accepted: nothing
        # to send, nothing to keep in step), trains on its share of each epoch with its part of
        # the batch, and evaluates the whole validation split (the same numbers everywhere).
        local_batch = self.parallel.local_batch(batch_size)
        steps_per_epoch = -(-self.parallel.share_size(len(train_rows)) // local_batch)
        loop = ResumableLoop(workdir, model, optimizer, settings, self.checkpoint_every_steps)
        loop.resume(epochs, steps_per_epoch)

        def average_gradients() -> None:
            # Steps run the head over cached lower layers, not the model's forward, so there is no
            # DistributedDataParallel: the gradients are averaged here, after each backward pass.
            self.parallel.average_gradients(model.parameters())

        total_steps = steps_per_epoch * epochs
        seen = 0

        def taught_in(order: np.ndarray) -> int:
            """The outputs' examples among these training rows (accuracy counts only them)."""
            return int(negatives.positive(train_y[order]).sum())

        # Early stopping needs a held-out split to measure on.
        patience = settings.early_stopping_patience if valid_rows is not train_rows else 0
        model.train()
        while loop.running(epochs):
            epoch = loop.epochs_done + 1
            # Frozen first epochs let the new head settle before the encoder moves.
            frozen_layers.train_upper_layers(
                model.encoder, epoch > settings.freeze_encoder_epochs, self.frozen_lower_layers
            )
            order = np.random.default_rng([settings.seed, epoch]).permutation(len(train_rows))
            order = self.parallel.share(order)
            # The epoch's training loss and accuracy accumulate on the fly: no extra pass.
            restored = loop.sums
            loss_sum = torch.tensor(restored.get("loss", 0.0), dtype=torch.float32)
            correct = torch.tensor(int(restored.get("correct", 0)), dtype=torch.long)
            sums = functools.partial(epoch_sums, loss_sum, correct)  # for mid-epoch checkpoints
            for batch_number, start in enumerate(range(0, len(order), local_batch)):
                if batch_number < loop.first_batch:
                    continue  # done before the job was interrupted
                loop.check_stop(reporter, deadline, batch_number, sums)
                selection = order[start : start + local_batch]
                with (
                    mixed.autocast()
                ):  # products in 16 bits where the hardware has them, loss float32
                    logits = model.head(train_states.embed(selection.tolist()))
                    targets = train_y[selection].to(mixed.device)
                    loss = negatives.loss(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                mixed.step(loss, optimizer, before_step=average_gradients)
                with torch.no_grad():
                    loss_sum += loss.detach().cpu() * len(selection)
                    correct += int((logits.argmax(dim=1) == targets).sum())
                seen += len(selection)
                loop.after_step(batch_number + 1, steps_per_epoch, sums)
                reporter.progress(
                    Progress(
                        phase="training",
                        epoch=epoch,
                        total_epochs=epochs,
                        step=(epoch - 1) * steps_per_epoch + batch_number + 1,
                        total_steps=total_steps,
                        loss=loss.item(),  # a sync point on a GPU, once per step
                        examples_per_second=seen / (time.monotonic() - started),
                    )
                )
            validation: dict[str, float] = {}
            if valid_states is not train_states:  # a held-out split: measure on it
                model.eval()
                with mixed.autocast():
                    valid_loss, valid_accuracy, _ = _evaluate(model, valid_states, valid_y)
                model.train()
                validation = {"validation_loss": valid_loss, "validation_accuracy": valid_accuracy}
            training = {
                "loss": loss_sum.item() / len(order),
                "train_accuracy": correct.item() / max(1, taught_in(order)),
            }
            # Without one, nothing tells the epochs apart but training: the latest is kept.
            loop.end_epoch(
                validation.get("validation_loss"), patience, figures={**training, **validation}
            )
            reporter.progress(
                Progress(
                    phase="training",
                    epoch=epoch,
                    total_epochs=epochs,
                    step=epoch * steps_per_epoch,
                    total_steps=total_steps,
                    **training,
                    examples_per_second=seen / (time.monotonic() - started),
                    **validation,
                )
            )
        loop.finish()

        reporter.progress(Progress(phase="evaluating", epoch=loop.epochs_done, total_epochs=epochs))
        model.load_state_dict(loop.best)
        model.eval()
        tensors = {
            name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
        }
        spec: dict[str, Any] = {"kind": KIND, "outputs": outputs}
        # The version's own metrics in float32 on every device: they are what analysis compares.
        # The texts' lower layers are cached: only the upper ones run again (once when validation
        # is the training split, as few_shot's default is).
        train_p = torch.softmax(_logits(model, train_states), dim=1).cpu().numpy()
        valid_p = (
            train_p
            if valid_states is train_states
            else torch.softmax(_logits(model, valid_states), dim=1).cpu().numpy()
        )
        ngrams = self._companion_model(examples, settings, reporter, workdir, deadline)
        if ngrams is not None:
            if ngrams.outputs != outputs:
                raise TrainingDataError("the n-gram model learned other outputs than the encoder")
            spec["ngrams"] = ngrams.spec
            tensors.update({f"ngrams.{name}": t for name, t in ngrams.tensors.items()})
            ngram_predictor = SupervisedPredictor(ngrams.spec, ngrams.tensors)
            train_p = (train_p + ngram_predictor.predict_proba(train_texts)) / 2
            valid_p = (valid_p + ngram_predictor.predict_proba(valid_texts)) / 2
        # An extended version is also in scope where the version it extends was.
        earlier = start_from[1].get(out_of_scope.KNOWN_EMBEDDINGS) if known and start_from else None
        tensors[out_of_scope.KNOWN_EMBEDDINGS] = out_of_scope.known_embeddings(
            known_embeddings, earlier
        )
        train_loss, train_accuracy, _, _ = _scores(train_p, train_y)
        valid_loss, valid_accuracy, truth, predicted = _scores(valid_p, valid_y)
        duration = time.monotonic() - started
        metrics = {
            "accuracy": train_accuracy,
            "loss": train_loss,
            "validation_accuracy": valid_accuracy,
            "validation_loss": valid_loss,
            "macro_f1": macro_f1(truth, predicted, len(outputs)),
            "epochs_run": loop.epochs_done,
            "duration_seconds": duration,
            "examples_per_second": seen / duration if seen else 0.0,
            "train_examples": len(train_rows),
            "validation_examples": len(valid_rows) if valid_rows is not train_rows else 0,
            "batch_size": batch_size,
            "num_workers": self.parallel.world_size,
        }
        return Artifact(
            tensors=tensors,
            spec=spec,
            outputs=outputs,
            metrics=metrics,
            encoder=pretrained.describe(),
            device=mixed.device_name,
            precision=mixed.name,
        )


def load_encoder(
    model: CosineClassifier, spec: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> None:
    """Put a version's fine-tuned encoder weights into ``model`` (its head stays new)."""
    if spec.get("kind") != KIND:
        raise TrainingDataError(
            "transfer reuses the encoder of a version trained on the pretrained encoder"
            f" (few_shot or transfer); the base version is {spec.get('kind')}"
        )
    prefix = "encoder."
    model.encoder.load_state_dict(
        {name[len(prefix) :]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
    )


def _serving_runtime(
    encoder: pretrained.SentenceEncoder, derived_dir: Path | None
) -> encoder_runtime.EncoderRuntime:
    """The encoder's runtime on the server's device: the GPU's, or the CPU's (encoder_runtime).

    ``auto`` takes the GPU when torch sees one; a GPU named outright was checked at start.
    """
    device = devices.resolve()
    if device == devices.CPU:
        return encoder_runtime.load(encoder, derived_dir)
    from agent_training_server.engines.cuda_runtime import CudaRuntime

    return CudaRuntime(encoder, device)


class FewShotPredictor(Predictor):
    """Scores texts with a fine-tuned CosineClassifier: the encoder's runtime, then the head."""

    def __init__(
        self,
        spec: dict[str, Any],
        tensors: dict[str, torch.Tensor],
        derived_dir: Path | None = None,
    ) -> None:
        self.outputs = list(spec["outputs"])
        model = CosineClassifier(pretrained.SentenceEncoder(), len(self.outputs))
        model.load_state_dict(
            {
                name: t
                for name, t in tensors.items()
                if not name.startswith(("ngrams.", out_of_scope.PREFIX))
            }
        )
        self._encoder = _serving_runtime(model.encoder, derived_dir)
        known = tensors.get(out_of_scope.KNOWN_EMBEDDINGS)
        self._known = None if known is None else known.float().numpy()
        self._head_weight = model.head.weight.detach().numpy().T.copy()
        self._head_bias = model.head.bias.detach().numpy().copy()
        self._ngrams = None
        if "ngrams" in spec:
            self._ngrams = SupervisedPredictor(
                spec["ngrams"],
                {
                    name.removeprefix("ngrams."): t
                    for name, t in tensors.items()
                    if name.startswith("ngrams.")
                },
            )

    @classmethod
    def load(
        cls, spec: dict[str, Any], tensors: dict[str, torch.Tensor], derived_dir: Path | None
    ) -> FewShotPredictor:
        """Build the predictor; its exported encoder is cached in ``derived_dir``."""
        return cls(spec, tensors, derived_dir)

    @property
    def runtime(self) -> str:
        """Which runtimes run the encoder.

        On the CPU ``onnxruntime`` or ``torch``, then ``+torch-bfloat16`` where batches run in
        bfloat16 (encoder_runtime.py); on a GPU ``torch-cuda:N-<precision>`` (cuda_runtime.py).
        """
        return self._encoder.name

    @classmethod
    def check(cls, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """The head fits the outputs and the encoder; an n-gram companion fits its own spec.

        The encoder's tensors are checked when the model is built (load_state_dict is strict).
        """
        outputs = len(spec["outputs"])
        check_shape(tensors, "head.weight", (outputs, pretrained.DIMENSIONS))
        check_shape(tensors, "head.bias", (outputs,))
        out_of_scope.check(tensors, pretrained.DIMENSIONS)
        if "ngrams" in spec:
            companion = {
                name.removeprefix("ngrams."): t
                for name, t in tensors.items()
                if name.startswith("ngrams.")
            }
            SupervisedPredictor.check(spec["ngrams"], companion)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return output probabilities per text."""
        logits = self._encoder.embed(list(texts)) @ self._head_weight + self._head_bias
        logits -= logits.max(axis=1, keepdims=True)  # exp cannot overflow
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        if self._ngrams is not None:
            probabilities = (probabilities + self._ngrams.predict_proba(texts)) / 2
        return probabilities

    def score(self, texts: Sequence[str]) -> Scores:
        """Probabilities, and out-of-scope scores (engines/out_of_scope.py).

        The distance is measured in the pretrained encoder's space: a second encoder pass.
        """
        probabilities = self.predict_proba(texts)
        if self._known is None:  # a version trained before the distance existed
            return Scores(probabilities, out_of_scope.score(probabilities))
        embeddings = _pretrained_runtime().embed(list(texts))
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
        distance = out_of_scope.neighbour_distance(embeddings, self._known)
        return Scores(probabilities, out_of_scope.score(probabilities, distance))


_pretrained_lock = threading.Lock()


@functools.cache
def _pretrained_runtime_unlocked() -> encoder_runtime.EncoderRuntime:
    return _serving_runtime(pretrained.SentenceEncoder(), None)


def _pretrained_runtime() -> encoder_runtime.EncoderRuntime:
    """The pretrained encoder, loaded once per process and shared by every encoder version."""
    with _pretrained_lock:
        return _pretrained_runtime_unlocked()
