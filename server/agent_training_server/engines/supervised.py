"""The supervised engine: a linear softmax model over hashed n-gram TF-IDF features, from scratch.

The model is one EmbeddingBag (a sparse linear layer: each n-gram's row holds its score for every
output) plus a bias, trained with Adagrad on mini-batches towards label-smoothed targets, its
scores then sharpened back by a fixed temperature (``Targets``). The features do the heavy
lifting, as they do for a linear SVM; the whole Banking77 training set trains in seconds on two
cores.

The features are built in numpy on the CPU; the model trains on the job's device (the CPU or a
GPU), in float32 on both (`ngram_precision`). Its predictor scores on the CPU, in numpy, wherever
it trained (`SupervisedPredictor`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agent_training_server import devices
from agent_training_server.engines import negatives, precision
from agent_training_server.engines import text_features as tf
from agent_training_server.engines.base import (
    Artifact,
    Engine,
    Example,
    Predictor,
    Progress,
    Reporter,
    TrainingDataError,
    TrainSettings,
)
from agent_training_server.engines.evaluation import macro_f1
from agent_training_server.engines.integrity import DamagedFile, check_shape
from agent_training_server.engines.resumable import ResumableLoop
from agent_training_server.engines.sparse_rows import SparseAdagrad, bag_sum, one_thread

KIND = "hashed_ngram_linear"
REPORT_EVERY_STEPS = 50
MIN_DOCUMENT_FREQUENCY = 1
"""Keep every n-gram seen in training: pruning rare ones (2+) trains faster but scores lower."""


@dataclasses.dataclass(frozen=True)
class Targets:
    """What the steps aim at, and how the trained scores become the served ones."""

    label_smoothing: float
    """The share of each example's target spread evenly over all outputs."""
    temperature: float
    """The saved weights are the trained ones divided by this (``served``)."""

    @property
    def objective(self) -> str:
        """The loss the steps minimise, as checkpoints record it ("" for plain cross-entropy)."""
        return f"label_smoothing={self.label_smoothing:g}" if self.label_smoothing else ""


SMOOTHED = Targets(label_smoothing=0.3, temperature=0.45)
"""The default: each target keeps 0.7 on its output, and the scores are sharpened back after.

Unregularised, a linear model over hundreds of thousands of n-grams fits its training examples
with ever larger scores for rare n-grams; smoothed targets bound the scores worth reaching for,
as an SVM's margin does. Chosen on validation data (the jobs' held-out 10% of Banking77 and of
Banking77 + HWU64 merged, HWU64's valid.csv; seeds 0-3), against none: 89.93 against 89.76%,
89.72 against 89.19%, 91.08 against 90.71%; 0.1 and 0.2 gained less, 0.4 and 0.5 no more.

Trained so, the model answers with about half the confidence its accuracy warrants (expected
calibration error 0.39-0.42 on held-out rows). The temperature that fits the held-out rows best
(AnalyzeAndOptimize's fit) was 0.42-0.47 on each of Banking77, HWU64 and the two merged, for
seeds 0-3 alike, and brings the error to 0.01-0.03: a constant, folded into the weights, so that
serving, exports and the analysis see calibrated scores with no extra step.
"""

PLAIN = Targets(label_smoothing=0.0, temperature=1.0)
"""One-hot targets, scores as trained: where telling out-of-scope messages apart comes first.

Smoothing narrows the gap between the confidence on in-scope and on out-of-scope messages: on
banking77-oos's validation files (seeds 0-3) the confidence's AUROC fell from 0.85-0.86 to
0.82-0.83, at about the same in-scope accuracy (87.18 against 86.93%). A job whose data holds
negatives asks for that separation; transfer's n-gram companion, whose probabilities are averaged
with the encoder's (and their out-of-scope scores combined), keeps what it was tuned with.
"""


def targets_for(labels: np.ndarray) -> Targets:
    """SMOOTHED, or PLAIN where the examples include negatives (out-of-scope messages)."""
    return PLAIN if bool((labels == negatives.NEGATIVE).any()) else SMOOTHED


class SparseLinear(nn.Module):
    """Scores of every output for a batch of sparse feature rows.

    With ``sparse_grad`` the weight's gradient holds only the rows a batch uses (train it with
    sparse_rows.SparseAdagrad); without, it is dense, one row per feature (any optimizer).
    """

    def __init__(self, features: int, outputs: int, sparse_grad: bool = False) -> None:
        super().__init__()
        # sparse=True also tells DistributedDataParallel to expect (and sum) sparse gradients.
        self.weight = nn.EmbeddingBag(features, outputs, mode="sum", sparse=sparse_grad)
        self.bias = nn.Parameter(torch.zeros(outputs))
        nn.init.zeros_(self.weight.weight)

    def forward(self, batch: tf.SparseBatch) -> torch.Tensor:
        """Return logits of shape (rows, outputs), on the model's device."""
        device = self.bias.device  # the CPU: no copy; a GPU: the batch's copy to it
        indices = torch.from_numpy(batch.indices).to(device)
        offsets = torch.from_numpy(batch.offsets[:-1]).to(device)
        weights = torch.from_numpy(batch.weights).to(device)
        if self.weight.sparse:
            return bag_sum(self.weight.weight, indices, offsets, weights) + self.bias
        return self.weight(indices, offsets, per_sample_weights=weights) + self.bias


def ngram_precision(device: str) -> precision.Precision:
    """How an n-gram model trains on ``device`` (``cpu`` or ``cuda:N``): float32 on both.

    Unlike the encoder's, its steps have no matrix product for 16-bit arithmetic to speed up:
    they gather rows of the table and sum them weighted, bound by memory, not arithmetic. In
    16 bits each summed term would keep 8 (bfloat16) to 11 (float16) significant bits: mixed
    precision would cost accuracy for no time saved. On the CPU this is the arithmetic the
    engine always used, so a seed's weights and metrics are what they were.
    """
    return precision.Precision(torch.device(device), precision.FLOAT32)


def sparse_gradients(device: torch.device, world_size: int) -> bool:
    """Whether the table trains with row-sparse gradients (sparse_rows.SparseAdagrad).

    Always, but for a data-parallel job on GPUs: NCCL cannot all-reduce a sparse tensor, so
    there the gradient is dense (every row, every step: cheap on a GPU) and DDP averages it as
    any other; Adagrad then updates every row (the same update: it moves no row without gradient).
    """
    return world_size == 1 or device.type != "cuda"


def auto_batch_size(train_examples: int) -> int:
    """Default batch size: about 40 steps per epoch, between 16 and 256 examples."""
    return max(16, min(256, train_examples // 40))


def taught(examples: Sequence[Example]) -> list[Example]:
    """Drop examples whose feedback says the output was wrong: they are not targets."""
    kept = []
    for example in examples:
        feedback = example.feedback.strip().lower()
        if feedback == "incorrect":
            continue
        try:
            if feedback and float(feedback) < 0:
                continue
        except ValueError:
            pass
        kept.append(example)
    return kept


def served(trained: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Trained scores, or the weights and bias that make them, as the saved version has them.

    Scores are linear in the weights: dividing both by the temperature divides the scores. Every
    reported loss is the served scores' cross-entropy (not the smoothed objective the steps
    minimise, whose floor is well above zero), so that it means what it means elsewhere.
    """
    return trained.detach() / targets.temperature


def epoch_sums(loss_sum: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    """An epoch's running loss and correct answers, as a mid-epoch checkpoint keeps them."""
    return {"loss": loss_sum.item(), "correct": correct.item()}


@dataclasses.dataclass(frozen=True)
class Measured:
    """A model's figures on some rows of outputs (negatives skipped)."""

    objective: float
    """The (smoothed) cross-entropy the steps minimise: what early stopping compares."""
    loss: float
    """The cross-entropy of the scores the version serves (``served``): what is reported."""
    accuracy: float


@torch.no_grad()
def evaluate(
    model: SparseLinear, rows: tf.SparseBatch, labels: np.ndarray, targets: Targets
) -> Measured:
    """Measure the model on the rows of outputs (negatives skipped).

    Early stopping compares the training objective: the served scores' cross-entropy grows as the
    sharpened scores grow more confident, and would stop before the accuracy peaks.
    """
    logits = model(rows)
    if bool((labels == negatives.NEGATIVE).any()):
        kept = labels != negatives.NEGATIVE
        logits, labels = logits[torch.from_numpy(kept).to(logits.device)], labels[kept]
    target = torch.from_numpy(labels).to(logits.device)
    objective = nn.functional.cross_entropy(logits, target, label_smoothing=targets.label_smoothing)
    loss = nn.functional.cross_entropy(served(logits, targets), target)
    accuracy = (logits.argmax(dim=1) == target).float().mean().item()
    return Measured(objective.item(), loss.item(), accuracy)


class SupervisedEngine(Engine):
    """Learns input -> expected_output from labelled examples."""

    training_type = "supervised"
    targets: Targets | None = None
    """Fixed targets for every job (transfer's companion: PLAIN); None: ``targets_for`` the data."""

    def train(
        self,
        examples: Sequence[Example],
        settings: TrainSettings,
        reporter: Reporter,
        workdir: Path,
    ) -> Artifact:
        """Train, with early stopping on validation loss and a checkpoint per epoch."""
        with one_thread():
            return self._train(examples, settings, reporter, workdir)

    def _train(
        self,
        examples: Sequence[Example],
        settings: TrainSettings,
        reporter: Reporter,
        workdir: Path,
    ) -> Artifact:
        started = time.monotonic()
        deadline = started + settings.max_duration_seconds
        reporter.progress(Progress(phase="loading_data"))
        examples = taught(examples)
        outputs = sorted({e.expected_output for e in examples} - {settings.negative_output})
        if not outputs:  # one output is allowed: that agent answers it to everything
            raise TrainingDataError("the data teaches no output; at least 1 is needed")
        labels = negatives.labels_of(
            [e.expected_output for e in examples], outputs, settings.negative_output
        )
        train_rows, valid_rows = negatives.split(labels, settings.validation_split, settings.seed)
        targets = self.targets or targets_for(labels)

        # Phase: features. The vocabulary and idf come from the training split only.
        config = tf.FeatureConfig()
        texts = [example.input for example in examples]
        blocks = tf.raw_features(texts, config)
        train_blocks = [
            tuple(part[np.isin(block[0], train_rows)] for part in block) for block in blocks
        ]
        vocabulary = tf.fit_vocabulary(train_blocks, len(train_rows), MIN_DOCUMENT_FREQUENCY)
        features = tf.transform(blocks, vocabulary, len(texts))
        train_x, train_y = features.rows(train_rows), labels[train_rows]
        valid_x, valid_y = features.rows(valid_rows), labels[valid_rows]

        # Phase: the model, on the job's device; the features stay in numpy on the CPU and each
        # batch's ids and weights are copied to the device as it is used.
        mixed = ngram_precision(devices.resolve(settings.device))
        torch.manual_seed(settings.seed)
        sparse = sparse_gradients(mixed.device, self.parallel.world_size)
        model = SparseLinear(vocabulary.size, len(outputs), sparse_grad=sparse).to(mixed.device)
        # With sparse gradients a step updates the rows its batch uses: its cost follows the
        # data, not the table size.
        optimizer = SparseAdagrad(model.parameters(), lr=settings.learning_rate)
        batch_size = settings.batch_size or auto_batch_size(len(train_rows))
        local_batch = self.parallel.local_batch(batch_size)
        steps_per_epoch = -(-self.parallel.share_size(len(train_rows)) // local_batch)
        loop = ResumableLoop(
            workdir, model, optimizer, settings, self.checkpoint_every_steps, targets.objective
        )
        loop.resume(settings.epochs, steps_per_epoch)

        trainer = self.parallel.wrap(model)  # steps go through it: it averages gradients
        total_steps = steps_per_epoch * settings.epochs
        seen_examples = 0
        while loop.running(settings.epochs):
            epoch = loop.epochs_done + 1
            # Each epoch's order derives from (seed, epoch): a resumed run replays it exactly.
            order = np.random.default_rng([settings.seed, epoch]).permutation(len(train_rows))
            order = self.parallel.share(order)
            epoch_x = train_x.rows(order)  # one gather an epoch; batches are spans of it
            # Training loss and accuracy of the epoch accumulate on the fly: no extra pass.
            restored = loop.sums
            loss_sum = torch.tensor(
                restored.get("loss", 0.0), dtype=torch.float32, device=mixed.device
            )
            correct = torch.tensor(
                int(restored.get("correct", 0)), dtype=torch.long, device=mixed.device
            )
            sums = functools.partial(epoch_sums, loss_sum, correct)  # for mid-epoch checkpoints
            for batch_number, start in enumerate(range(0, len(order), local_batch)):
                if batch_number < loop.first_batch:
                    continue  # done before the job was interrupted
                loop.check_stop(reporter, deadline, batch_number, sums)
                selection = order[start : start + local_batch]
                logits = trainer(epoch_x.span(start, start + len(selection)))
                target = torch.from_numpy(train_y[selection]).to(mixed.device)
                loss = negatives.loss(logits, target, targets.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                mixed.step(loss, optimizer)
                with torch.no_grad():
                    loss = negatives.loss(served(logits, targets), target)  # reported
                    loss_sum += loss * len(selection)
                    correct += (logits.argmax(dim=1) == target).sum()
                seen_examples += len(selection)
                loop.after_step(batch_number + 1, steps_per_epoch, sums)
                step = (epoch - 1) * steps_per_epoch + batch_number + 1
                if step % REPORT_EVERY_STEPS == 0:
                    reporter.progress(
                        Progress(
                            phase="training",
                            epoch=epoch,
                            total_epochs=settings.epochs,
                            step=step,
                            total_steps=total_steps,
                            loss=loss.item(),  # .item(): a sync point
                            examples_per_second=seen_examples / (time.monotonic() - started),
                        )
                    )
            # Phase: end of epoch. Measure, keep the best, checkpoint.
            train_loss = loss_sum.item() / len(order)  # .item(): a sync point, once an epoch
            train_accuracy = correct.item() / max(1, int(negatives.positive(train_y[order]).sum()))
            measured = evaluate(model, valid_x, valid_y, targets)
            valid_loss, valid_accuracy = measured.loss, measured.accuracy
            loop.end_epoch(
                measured.objective,
                settings.early_stopping_patience,
                figures={
                    "loss": train_loss,
                    "train_accuracy": train_accuracy,
                    "validation_loss": valid_loss,
                    "validation_accuracy": valid_accuracy,
                },
            )
            reporter.progress(
                Progress(
                    phase="training",
                    epoch=epoch,
                    total_epochs=settings.epochs,
                    step=epoch * steps_per_epoch,
                    total_steps=total_steps,
                    loss=train_loss,
                    train_accuracy=train_accuracy,
                    validation_accuracy=valid_accuracy,
                    validation_loss=valid_loss,
                    examples_per_second=seen_examples / (time.monotonic() - started),
                )
            )

        loop.finish(wait=False)  # the last checkpoints are written while the evaluation runs
        # Phase: evaluate the best weights.
        reporter.progress(
            Progress(phase="evaluating", epoch=loop.epochs_done, total_epochs=settings.epochs)
        )
        model.load_state_dict(loop.best)
        on_train = evaluate(model, train_x, train_y, targets)
        on_valid = evaluate(model, valid_x, valid_y, targets)
        with torch.no_grad():
            predicted = model(valid_x).argmax(dim=1).cpu().numpy()
        taught_rows = valid_y != negatives.NEGATIVE  # all but where nothing was held out
        loop.wait()
        duration = time.monotonic() - started
        metrics = {
            "accuracy": on_train.accuracy,
            "loss": on_train.loss,
            "validation_accuracy": on_valid.accuracy,
            "validation_loss": on_valid.loss,
            "macro_f1": macro_f1(valid_y[taught_rows], predicted[taught_rows], len(outputs)),
            "epochs_run": loop.epochs_done,
            "examples_per_second": seen_examples / duration if seen_examples else 0.0,
            "duration_seconds": duration,
            "train_examples": len(train_rows),
            "batch_size": batch_size,
            "num_workers": self.parallel.world_size,
            "validation_examples": len(valid_rows) if valid_rows is not train_rows else 0,
        }
        encoder = {
            "name": "hashed_ngrams",
            "dimensions": vocabulary.size,
            "word_ngrams": "1-2",
            "char_ngrams": f"{config.char_ngram_min}-{config.char_ngram_max}",
            "weighting": "sublinear tf-idf, l2 per block",
        }
        tensors = {  # saved from the CPU, whichever device trained them
            "weight": served(model.weight.weight, targets).cpu().contiguous(),
            "bias": served(model.bias, targets).cpu().contiguous(),
            "vocabulary": torch.from_numpy(vocabulary.buckets),
            "idf": torch.from_numpy(vocabulary.idf),
        }
        spec = {"kind": KIND, "features": dataclasses.asdict(config), "outputs": outputs}
        return Artifact(
            tensors=tensors,
            spec=spec,
            outputs=outputs,
            metrics=metrics,
            encoder=encoder,
            device=mixed.device_name,
            precision=mixed.name,
        )


class SupervisedPredictor(Predictor):
    """Scores texts with a trained SparseLinear model's weights, in numpy.

    Serving scores a handful of texts per call: a sparse product in numpy costs a fraction of
    torch's EmbeddingBag call for them (bench/invoke_profile.py) and gives the same scores to
    float32 rounding. It stays on the CPU on a GPU server too, whatever device the version
    trained on: a GPU would add a copy each way and a kernel launch or more to tens of
    microseconds of work, and the scoring runs on the event loop (``scores_inline``), where
    waiting for a GPU would hold up every other call.
    """

    scores_inline = True
    """Tens of microseconds per input: InvokeAgent scores it on its event loop, not a thread."""

    def __init__(self, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.outputs = list(spec["outputs"])
        self._config = tf.FeatureConfig(**spec["features"])
        self._vocabulary = tf.Vocabulary(tensors["vocabulary"].numpy(), tensors["idf"].numpy())
        weight = tensors["weight"] if "weight" in tensors else dequantized(tensors)
        self._weight = np.ascontiguousarray(weight.numpy(), dtype=np.float32)
        self._bias = tensors["bias"].numpy().astype(np.float32)

    @classmethod
    def check(cls, spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        """Vocabulary, idf and weight rows agree; weight columns and bias match the outputs."""
        outputs = len(spec["outputs"])
        vocabulary = tensors.get("vocabulary")
        if vocabulary is None or vocabulary.dim() != 1:
            raise DamagedFile("the weights lack a one-dimensional 'vocabulary' tensor")
        features = int(vocabulary.shape[0])
        check_shape(tensors, "idf", (features,))
        check_shape(tensors, "bias", (outputs,))
        if "weight" in tensors:
            check_shape(tensors, "weight", (features, outputs))
        else:
            check_shape(tensors, "weight_int8", (features, outputs))
            check_shape(tensors, "weight_scale", (outputs,))

    def features(self, texts: Sequence[str]) -> tf.SparseBatch:
        """The texts' n-gram features, as the model was trained on them."""
        blocks = tf.raw_features(texts, self._config)
        return tf.transform(blocks, self._vocabulary, len(texts))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Return output probabilities per text."""
        return softmax(sparse_scores(self.features(texts), self._weight) + self._bias)


def sparse_scores(rows: tf.SparseBatch, weight: np.ndarray) -> np.ndarray:
    """Each row's weighted sum of its features' weight rows: shape (rows, outputs)."""
    counts = np.diff(rows.offsets)
    scores = np.zeros((len(counts), weight.shape[1]), dtype=np.float32)
    if not len(rows.indices):
        return scores
    terms = weight[rows.indices] * rows.weights[:, None]
    filled = counts > 0  # an empty row's segment would borrow the next row's first term
    scores[filled] = np.add.reduceat(terms, rows.offsets[:-1][filled], axis=0)
    return scores


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by each row's maximum so that nothing overflows."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def compact(tensors: dict[str, torch.Tensor], keep: float, int8: bool) -> dict[str, torch.Tensor]:
    """A smaller model: the `keep` fraction of features with the largest weights, maybe int8.

    int8 weights have one scale per output. Accuracy must be measured: it may drop.
    """
    weight = tensors["weight"] if "weight" in tensors else dequantized(tensors)
    vocabulary, idf = tensors["vocabulary"], tensors["idf"]
    if keep < 1.0:
        strength = weight.abs().amax(dim=1)
        count = max(1, round(len(strength) * keep))
        rows = torch.sort(torch.topk(strength, count).indices).values  # buckets stay sorted
        weight, vocabulary, idf = weight[rows], vocabulary[rows], idf[rows]
    result = {
        "vocabulary": vocabulary.contiguous(),
        "idf": idf.contiguous(),
        "bias": tensors["bias"],
    }
    if int8:
        scale = weight.abs().amax(dim=0).clamp(min=1e-12) / 127.0
        result["weight_int8"] = torch.round(weight / scale).to(torch.int8).contiguous()
        result["weight_scale"] = scale.to(torch.float32).contiguous()
    else:
        result["weight"] = weight.contiguous()
    return result


def dequantized(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """float32 weights from int8 ones and their per-output scales."""
    return tensors["weight_int8"].to(torch.float32) * tensors["weight_scale"]
