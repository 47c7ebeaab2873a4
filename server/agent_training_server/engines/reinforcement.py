"""The reinforcement engine: a better policy from logged bandit feedback, without labels.

Each example is an interaction: the input, the output the agent gave (``expected_output``), the
reward (``feedback``: "correct" = +1, "incorrect" = -1, or a number in [-1, 1]) and, when known,
the propensity with which the logging policy chose that output.

The policy is the supervised engine's model (hashed n-gram TF-IDF into a linear softmax), started
from the agent's current version when there is one. The objective, per interaction, weighted by a
clipped, self-normalised importance weight 1/propensity:
- a rewarded output is taught as the target (cross-entropy, weight r);
- a penalised output is replaced, as the target, by the policy's own best *other* output when the
  policy is confident about it (a pseudo-label constrained by the "no"): the true answer is
  usually the runner-up, so a "no" moves mass there instead of spreading it over every output.
  Unconfident ones are skipped, so early, poor guesses do not teach their own mistakes.
Each epoch reports the self-normalised inverse propensity (SNIPS) estimate of the policy's value
on held-out interactions, next to the loss.

As in the supervised engine, the features are built on the CPU and the policy trains on the job's
device in float32 (supervised.ngram_precision); the weights are saved from the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent_training_server import devices
from agent_training_server.engines import text_features as tf
from agent_training_server.engines.base import (
    Artifact,
    Engine,
    Example,
    Progress,
    Reporter,
    TrainingDataError,
    TrainSettings,
)
from agent_training_server.engines.evaluation import stratified_split
from agent_training_server.engines.resumable import ResumableLoop
from agent_training_server.engines.supervised import KIND, SparseLinear, ngram_precision

MAX_IMPORTANCE_WEIGHT = 20.0
"""Clip of 1/propensity: rare explorations count more, but no single one dominates."""
CONFIDENT = 0.5
"""A penalised interaction teaches the policy's best other output only when the policy gives
that output at least this share of the probability left once the penalised one is removed."""


def reward_of(feedback: str) -> float:
    """Reward of a feedback value; raises TrainingDataError when it cannot be read."""
    text = feedback.strip().lower()
    if text == "correct":
        return 1.0
    if text == "incorrect":
        return -1.0
    try:
        reward = float(text)
    except ValueError:
        raise TrainingDataError(
            f"feedback {feedback!r} is not 'correct', 'incorrect' or a number in [-1, 1]"
        ) from None
    if not -1.0 <= reward <= 1.0:
        raise TrainingDataError(f"reward {reward} is outside [-1, 1]")
    return reward


def warm_start(
    start_from: tuple[dict[str, Any], dict[str, torch.Tensor]] | None,
    actions: list[str],
    blocks: list[tuple[np.ndarray, ...]],
    documents: int,
) -> tuple[list[str], tf.Vocabulary, torch.Tensor, torch.Tensor]:
    """Outputs, vocabulary and initial (weight, bias), carried over from a starting version.

    The vocabulary covers the logged inputs (so the policy can learn from words the starting
    version never saw); the starting weights are copied for the n-grams and outputs it shares.
    """
    vocabulary = tf.fit_vocabulary(blocks, documents)
    outputs = list(start_from[0]["outputs"]) if start_from else []
    outputs += sorted(set(actions) - set(outputs))
    weight = torch.zeros(vocabulary.size, len(outputs))
    bias = torch.zeros(len(outputs))
    if start_from is not None:
        spec, tensors = start_from
        if spec.get("kind") != KIND:
            raise TrainingDataError(
                "reinforcement starts from an n-gram policy; this agent's active version is"
                f" {spec['kind']}"
            )
        old_buckets = tensors["vocabulary"].numpy()
        shared = np.intersect1d(old_buckets, vocabulary.buckets)
        old_rows = np.searchsorted(old_buckets, shared)
        new_rows = np.searchsorted(vocabulary.buckets, shared)
        known = len(spec["outputs"])
        weight[torch.from_numpy(new_rows), :known] = tensors["weight"][torch.from_numpy(old_rows)]
        bias[:known] = tensors["bias"]
        bias[known:] = tensors["bias"].min()  # new outputs start as unlikely as the least likely
    return outputs, vocabulary, weight, bias


def interaction_loss(
    logits: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The weighted objective described in the module docstring, averaged over the batch."""
    log_probs = torch.log_softmax(logits, dim=1)
    chosen = log_probs.gather(1, actions[:, None]).squeeze(1)
    positive = rewards > 0
    loss = torch.where(positive, -chosen * rewards, torch.zeros_like(chosen))
    with torch.no_grad():
        others = torch.softmax(logits, dim=1)
        others.scatter_(1, actions[:, None], 0.0)
        others = others / others.sum(dim=1, keepdim=True).clamp(min=1e-12)
        confidence, guess = others.max(dim=1)
        trusted = (confidence >= CONFIDENT).float()
    redirect = -log_probs.gather(1, guess[:, None]).squeeze(1) * (-rewards) * trusted
    loss = torch.where(positive, loss, redirect)
    return (loss * weights).sum() / weights.sum()


@torch.no_grad()
def policy_value(
    model: SparseLinear,
    rows: tf.SparseBatch,
    actions: np.ndarray,
    rewards: np.ndarray,
    propensities: np.ndarray,
) -> float:
    """SNIPS estimate of the greedy policy's expected reward on logged interactions."""
    greedy = model(rows).argmax(dim=1).cpu().numpy()
    match = (greedy == actions).astype(np.float64) / propensities
    total = match.sum()
    return float((match * rewards).sum() / total) if total > 0 else 0.0


class ReinforcementEngine(Engine):
    """Learns a policy from logged interactions and their rewards."""

    training_type = "reinforcement"
    starts_from_version = True

    def train(
        self,
        examples: Sequence[Example],
        settings: TrainSettings,
        reporter: Reporter,
        workdir: Path,
        start_from: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None,
    ) -> Artifact:
        """Train from the interactions, starting from ``start_from`` (spec, tensors) if given."""
        started = time.monotonic()
        deadline = started + settings.max_duration_seconds
        reporter.progress(Progress(phase="loading_data"))
        if not examples:
            raise TrainingDataError("no interactions to learn from")
        rewards = np.array([reward_of(e.feedback) for e in examples], dtype=np.float32)
        propensities = np.array(
            [e.propensity if e.propensity else 1.0 for e in examples], dtype=np.float64
        )
        texts = [e.input for e in examples]
        blocks = tf.raw_features(texts, tf.FeatureConfig())
        outputs, vocabulary, weight, bias = warm_start(
            start_from, [e.expected_output for e in examples], blocks, len(texts)
        )
        if len(outputs) < 2:
            raise TrainingDataError("a policy needs at least 2 outputs to choose between")
        index = {output: i for i, output in enumerate(outputs)}
        actions = np.array([index[e.expected_output] for e in examples], dtype=np.int64)
        features = tf.transform(blocks, vocabulary, len(texts))
        importance = np.minimum(1.0 / propensities, MAX_IMPORTANCE_WEIGHT).astype(np.float32)
        importance /= importance.mean()
        train_rows, valid_rows = stratified_split(
            (rewards > 0).astype(np.int64) * len(outputs) + actions,
            settings.validation_split,
            settings.seed,
        )

        mixed = ngram_precision(devices.resolve(settings.device))
        torch.manual_seed(settings.seed)
        model = SparseLinear(vocabulary.size, len(outputs))
        with torch.no_grad():
            model.weight.weight.copy_(weight)
            model.bias.copy_(bias)
        model.to(mixed.device)  # before the optimizer takes its parameters
        optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, fused=True)
        batch_size = settings.batch_size or max(16, min(256, len(train_rows) // 40))
        steps_per_epoch = -(-len(train_rows) // batch_size)
        loop = ResumableLoop(workdir, model, optimizer, settings, self.checkpoint_every_steps)
        loop.resume(settings.epochs, steps_per_epoch)

        def tensors_of(rows: np.ndarray) -> tuple:
            # The features stay in numpy (the model copies them to its device); the rest goes now.
            return (
                features.rows(rows),
                torch.from_numpy(actions[rows]).to(mixed.device),
                torch.from_numpy(rewards[rows]).to(mixed.device),
                torch.from_numpy(importance[rows]).to(mixed.device),
            )

        valid = tensors_of(valid_rows)
        total_steps = steps_per_epoch * settings.epochs
        seen = 0
        while loop.running(settings.epochs):
            epoch = loop.epochs_done + 1
            order = train_rows[
                np.random.default_rng([settings.seed, epoch]).permutation(len(train_rows))
            ]
            for batch_number, start in enumerate(range(0, len(order), batch_size)):
                if batch_number < loop.first_batch:
                    continue  # done before the job was interrupted
                loop.check_stop(reporter, deadline, batch_number)
                rows, batch_actions, batch_rewards, batch_weights = tensors_of(
                    order[start : start + batch_size]
                )
                loss = interaction_loss(model(rows), batch_actions, batch_rewards, batch_weights)
                optimizer.zero_grad(set_to_none=True)
                mixed.step(loss, optimizer)
                seen += len(batch_actions)
                loop.after_step(batch_number + 1, steps_per_epoch)
            with torch.no_grad():
                valid_loss = interaction_loss(model(valid[0]), *valid[1:]).item()
            value = policy_value(
                model, valid[0], actions[valid_rows], rewards[valid_rows], propensities[valid_rows]
            )
            loop.end_epoch(
                valid_loss,
                settings.early_stopping_patience,
                figures={"loss": loss.item(), "validation_loss": valid_loss},
                best_value=value,
            )
            reporter.progress(
                Progress(
                    phase="training",
                    epoch=epoch,
                    total_epochs=settings.epochs,
                    step=epoch * steps_per_epoch,
                    total_steps=total_steps,
                    loss=loss.item(),
                    validation_loss=valid_loss,
                    policy_value=value,
                    examples_per_second=seen / (time.monotonic() - started),
                )
            )
        loop.finish()

        reporter.progress(
            Progress(phase="evaluating", epoch=loop.epochs_done, total_epochs=settings.epochs)
        )
        model.load_state_dict(loop.best)
        train = tensors_of(train_rows)
        with torch.no_grad():
            train_loss = interaction_loss(model(train[0]), *train[1:]).item()
            valid_loss = interaction_loss(model(valid[0]), *valid[1:]).item()
        train_value = policy_value(
            model, train[0], actions[train_rows], rewards[train_rows], propensities[train_rows]
        )
        valid_value = policy_value(
            model, valid[0], actions[valid_rows], rewards[valid_rows], propensities[valid_rows]
        )
        duration = time.monotonic() - started
        metrics = {
            # For a policy, "accuracy" is the estimated share of rewarded answers: (value + 1) / 2
            # when rewards are +-1.
            "accuracy": (train_value + 1) / 2,
            "loss": train_loss,
            "validation_accuracy": (valid_value + 1) / 2,
            "validation_loss": valid_loss,
            "policy_value": valid_value,
            "epochs_run": loop.epochs_done,
            "duration_seconds": duration,
            "examples_per_second": seen / duration if seen else 0.0,
            "train_examples": len(train_rows),
            "validation_examples": len(valid_rows),
        }
        tensors = {  # saved from the CPU, whichever device trained them
            "weight": model.weight.weight.detach().cpu().contiguous(),
            "bias": model.bias.detach().cpu().contiguous(),
            "vocabulary": torch.from_numpy(vocabulary.buckets),
            "idf": torch.from_numpy(vocabulary.idf),
        }
        config = tf.FeatureConfig()
        spec = {
            "kind": KIND,
            "features": {
                "word_buckets": config.word_buckets,
                "char_buckets": config.char_buckets,
                "char_ngram_min": config.char_ngram_min,
                "char_ngram_max": config.char_ngram_max,
            },
            "outputs": outputs,
        }
        encoder = {
            "name": "hashed_ngrams",
            "dimensions": vocabulary.size,
            "started_from_version": bool(start_from),
        }
        return Artifact(
            tensors=tensors,
            spec=spec,
            outputs=outputs,
            metrics=metrics,
            encoder=encoder,
            device=mixed.device_name,
            precision=mixed.name,
        )
