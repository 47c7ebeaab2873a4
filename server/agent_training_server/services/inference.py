"""Answering with a trained agent: load a version's model (cached), score, apply its behaviour."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent_training_server.artifacts import load_version_predictor
from agent_training_server.auth import current_tenant
from agent_training_server.domain import (
    Agent,
    AgentVersion,
    BehaviorSettings,
    Invocation,
    Rollout,
    RolloutMode,
)
from agent_training_server.engines.base import Scores
from agent_training_server.errors import FailedPrecondition, NotFound, VersionDamaged
from agent_training_server.metrics import Metrics
from agent_training_server.not_found import version_not_found
from agent_training_server.rollouts import assignment
from agent_training_server.services.micro_batching import MicroBatcher
from agent_training_server.store.base import Store
from agent_training_server.store.read_cache import ReadCache

log = logging.getLogger(__name__)

CACHE_SIZE = 16
"""Loaded models kept in memory, least recently used evicted first."""

INLINE_INPUTS = 64
"""Most inputs a fast model scores on the event loop (about a millisecond for n-gram agents)."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """What an agent's behaviour settings make of one input's probabilities."""

    output: str
    confidence: float
    is_fallback: bool
    alternatives: list[tuple[str, float]]
    propensity: float
    explored: bool
    ambiguous_outputs: list[tuple[str, float]] = dataclasses.field(default_factory=list)
    """The best two outputs when their confidences are within the ambiguity margin, else []."""
    out_of_scope_score: float = 0.0
    """How unlike the agent's training data the input is, in [0, 1] (engines/out_of_scope.py)."""


@dataclasses.dataclass(frozen=True)
class Answer(Choice):
    """The answer to one input: the choice, with its id and input."""

    invocation_id: str = ""
    input: str = ""


@dataclasses.dataclass(frozen=True)
class Served:
    """An InvokeAgent call's answers and who gave them."""

    version: AgentVersion
    answers: list[Answer]
    arm: str = ""
    """While a rollout runs: ``active`` or ``candidate``; else empty."""


def apply_behavior(
    probabilities: np.ndarray,
    outputs: Sequence[str],
    behavior: BehaviorSettings,
    rng: random.Random,
    out_of_scope_score: float = 0.0,
) -> Choice:
    """Choose an output for one input's probabilities, as the behaviour settings say.

    The fallback answers an input the agent is unsure of (best confidence under the threshold)
    or that looks unlike anything it was trained on (out-of-scope score above its threshold).
    """
    scores = probabilities.astype(np.float64)
    if behavior.temperature != 1.0:
        # Same as dividing the logits by the temperature, computed from probabilities.
        scores = np.power(np.clip(scores, 1e-12, 1.0), 1.0 / behavior.temperature)
    if behavior.disabled_outputs:
        disabled = set(behavior.disabled_outputs)
        scores = np.where([name in disabled for name in outputs], 0.0, scores)
    total = scores.sum()
    scores = scores / total if total > 0 else np.full(len(outputs), 1.0 / len(outputs))
    order = np.argsort(-scores, kind="stable")
    best = int(order[0])
    chosen, propensity, explored = best, 1.0, False
    if behavior.exploration_rate > 0:
        chosen, propensity, explored = _explore(scores, order, behavior.exploration_rate, rng)
    confidence = float(scores[chosen])
    alternatives = [
        (outputs[int(i)], float(scores[int(i)]))
        for i in order[: behavior.num_alternatives + 1]
        if int(i) != chosen
    ][: behavior.num_alternatives]
    unsure = confidence < behavior.confidence_threshold
    unknown = out_of_scope_score > behavior.out_of_scope_threshold
    if not explored and (unsure or unknown):
        return Choice(
            behavior.fallback_output,
            confidence,
            True,
            alternatives,
            propensity,
            False,
            out_of_scope_score=out_of_scope_score,
        )
    return Choice(
        outputs[chosen],
        confidence,
        False,
        alternatives,
        propensity,
        explored,
        [] if explored else _ambiguous(scores, order, outputs, behavior.ambiguity_margin),
        out_of_scope_score,
    )


def _ambiguous(
    scores: np.ndarray, order: np.ndarray, outputs: Sequence[str], margin: float
) -> list[tuple[str, float]]:
    """The best two outputs with their confidences when they are within ``margin``, else []."""
    if margin <= 0 or len(order) < 2:
        return []
    first, second = int(order[0]), int(order[1])
    if scores[second] <= 0 or scores[first] - scores[second] > margin:
        return []
    return [(outputs[first], float(scores[first])), (outputs[second], float(scores[second]))]


def _explore(
    scores: np.ndarray, order: np.ndarray, rate: float, rng: random.Random
) -> tuple[int, float, bool]:
    """epsilon-greedy: the logged propensity lets off-policy learning correct for it.

    Returns (chosen output, its propensity, explored).
    """
    candidates = [int(i) for i in order[1:] if scores[i] > 0]
    if not candidates:
        return int(order[0]), 1.0, False
    if rng.random() < rate:
        return rng.choice(candidates), rate / len(candidates), True
    return int(order[0]), 1.0 - rate, False


class InferenceService:
    """Answers inputs with an agent's active (or a named) version."""

    def __init__(
        self,
        store: Store,
        data_dir: Path,
        on_answers: Callable[[list[Invocation]], None] | None = None,
        metrics: Metrics | None = None,
        read_seconds: float = math.inf,
        batch_inputs: int = 64,
        batch_wait: float = 0.0,
    ) -> None:
        """Serve versions of ``store``; ``read_seconds`` bounds the age of a cached lookup.

        Bounded where other replicas write to the same database (their commits are not counted
        here): a version another replica activates is served within that time. Concurrent calls
        for one version are scored together, up to ``batch_inputs`` inputs, waiting at most
        ``batch_wait`` seconds for others to join (services/micro_batching.py).
        """
        self._metrics = metrics
        self._store = store
        self._data_dir = data_dir
        self._on_answers = on_answers
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._rng = random.Random()
        # Read per call; the store's commit count says when a version or rollback makes it stale.
        # Keyed by (agent_id, version_id, tenant): the store reads only the caller's agent, so
        # another tenant's id is not cached and costs a store read, exactly as a missing one.
        self._lookups: ReadCache[tuple[Agent, AgentVersion | None]] = ReadCache(
            store.agent_with_version, lambda: store.commits, max_age=read_seconds
        )
        # The agent's running rollout, read on every call like the version: a 1-tuple, so that
        # "no rollout" is kept too.
        self._rollouts: ReadCache[tuple[Rollout | None]] = ReadCache(
            lambda agent_id: (store.running_rollout(agent_id),),
            lambda: store.commits,
            max_age=read_seconds,
        )
        self._batcher: MicroBatcher[AgentVersion, Scores] = MicroBatcher(
            self._score,
            key=lambda version: version.version_id,
            max_inputs=batch_inputs,
            max_wait=batch_wait,
            on_batch=None if metrics is None else self._count_batch,
            inline=self._scores_inline,
        )

    async def scorer(
        self, agent_id: str
    ) -> tuple[AgentVersion, Callable[[Sequence[str]], np.ndarray]]:
        """The agent's active version and a function scoring texts with it (any thread)."""
        version = await self._active_version(agent_id, "")
        predictor = await asyncio.to_thread(self._predictor, version)
        return version, lambda texts: predictor.predict_proba(list(texts))

    async def invoke(
        self,
        agent_id: str,
        inputs: Sequence[str],
        version_id: str = "",
        context: Sequence[str] = (),
        assignment_key: str = "",
    ) -> Served:
        """Answer each input in order, with the named version or the agent's (or its rollout's).

        While a rollout runs and no version is named, a canary's candidate answers its share of
        the calls (sticky by ``assignment_key``), and a shadow's answers every input unseen.
        """
        version = await self._active_version(agent_id, version_id)
        rollout = None if version_id else await self._running_rollout(agent_id)
        arm, arm_probability = "", 1.0
        candidate = None
        if rollout is not None:
            candidate = await self._candidate(agent_id, rollout)
            arm, arm_probability = assignment.arm_for(rollout, assignment_key, self._rng)
            if candidate is None:  # the candidate is gone: the active version answers alone
                rollout, arm, arm_probability = None, "", 1.0
            elif arm == assignment.CANDIDATE:
                version = candidate
        try:
            answers, scored = await self._answer(version, inputs, arm_probability)
        except VersionDamaged:
            if arm != assignment.CANDIDATE:
                raise
            # A candidate whose files are damaged or gone answers nothing: the active version
            # does, and the caller never sees the trial's failure.
            log.warning("rollout candidate of %s cannot answer: the active version does", agent_id)
            version, arm = await self._active_version(agent_id, ""), assignment.ACTIVE
            answers, scored = await self._answer(version, inputs, 1.0)
        invocations = self._records(agent_id, version, answers, context, scored, rollout, arm)
        if rollout is not None and candidate is not None and rollout.mode == RolloutMode.SHADOW:
            try:
                shadows, shadow_scored = await self._answer(candidate, inputs, 1.0)
            except VersionDamaged:
                log.warning("rollout candidate of %s cannot shadow: not recorded", agent_id)
                shadows, shadow_scored = [], 0.0
            invocations += [
                dataclasses.replace(record, arm=assignment.SHADOW, shadow_of=answer.invocation_id)
                for record, answer in zip(
                    self._records(
                        agent_id, candidate, shadows, context, shadow_scored, rollout, arm
                    ),
                    answers[: len(shadows)],
                    strict=True,
                )
            ]
        if self._metrics is not None:
            self._metrics.invocations.labels(agent_id).inc(len(answers))
            self._metrics.invocation_seconds.labels(agent_id).observe(scored)
            fallbacks = sum(answer.is_fallback for answer in answers)
            if fallbacks:
                self._metrics.fallbacks.labels(agent_id).inc(fallbacks)
        if self._on_answers is not None:
            self._on_answers(invocations)
        return Served(version, answers, arm)

    async def _answer(
        self, version: AgentVersion, inputs: Sequence[str], arm_probability: float
    ) -> tuple[list[Answer], float]:
        """Score the inputs with a version and apply its behaviour; (answers, scoring seconds).

        ``arm_probability``: the rollout arm's, folded into each answer's propensity.
        """
        scores, scored = await self._batcher.score(version, inputs)
        answers = []
        for text, row, out_of_scope in zip(
            inputs, scores.probabilities, scores.out_of_scope.tolist(), strict=True
        ):
            choice = apply_behavior(row, version.outputs, version.behavior, self._rng, out_of_scope)
            # vars, not dataclasses.asdict: a shallow copy, on the hot path of every call.
            fields = vars(choice)
            if arm_probability != 1.0:
                fields = {**fields, "propensity": choice.propensity * arm_probability}
            answers.append(
                Answer(**fields, invocation_id=f"inv_{secrets.token_hex(8)}", input=text)
            )
        return answers, scored

    @staticmethod
    def _records(
        agent_id: str,
        version: AgentVersion,
        answers: Sequence[Answer],
        context: Sequence[str],
        scored: float,
        rollout: Rollout | None,
        arm: str,
    ) -> list[Invocation]:
        """The answers as stored for feedback (and for a rollout's evidence)."""
        now = time.time()
        latency_ms = 1000.0 * scored / max(1, len(answers))
        return [
            Invocation(
                invocation_id=a.invocation_id,
                agent_id=agent_id,
                version_id=version.version_id,
                input=a.input,
                context=tuple(context),
                output=a.output,
                confidence=a.confidence,
                propensity=a.propensity,
                explored=a.explored,
                is_fallback=a.is_fallback,
                time=now,
                rollout_id=rollout.rollout_id if rollout is not None else "",
                arm=arm,
                latency_ms=latency_ms,
            )
            for a in answers
        ]

    async def _running_rollout(self, agent_id: str) -> Rollout | None:
        """The agent's running rollout: in memory until the store's next write."""
        kept = self._rollouts.cached(agent_id)
        if kept is None:
            kept = await asyncio.to_thread(self._rollouts.get, agent_id)
        return kept[0]

    async def _candidate(self, agent_id: str, rollout: Rollout) -> AgentVersion | None:
        """The rollout's candidate version; None if it is gone (its calls go to the active)."""
        try:
            return await self._active_version(agent_id, rollout.candidate_version_id)
        except NotFound:
            return None

    def _scores_inline(self, version: AgentVersion, inputs: int) -> bool:
        """Whether scoring ``inputs`` with ``version`` is quicker than a hop to a worker thread.

        True for a loaded model that says it is fast (n-gram agents: tens of microseconds per
        input) and a batch of at most INLINE_INPUTS; loading a model and encoders' forward
        passes go to a worker thread, so the event loop keeps serving meanwhile.
        """
        with self._cache_lock:
            predictor = self._cache.get(version.version_id)
        return predictor is not None and predictor.scores_inline and inputs <= INLINE_INPUTS

    def _count_batch(self, calls: int, inputs: int) -> None:
        assert self._metrics is not None
        self._metrics.invoke_batch_calls.observe(calls)
        self._metrics.invoke_batch_inputs.observe(inputs)

    async def _active_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """The named version, or the agent's active one."""
        kept = self._lookups.cached(agent_id, version_id, current_tenant())
        if kept is not None and kept[1] is not None:
            return kept[1]  # in memory: no hop to a worker thread
        return await asyncio.to_thread(self._version, agent_id, version_id)

    def _version(self, agent_id: str, version_id: str) -> AgentVersion:
        # The caller's context travels into the thread: another tenant's agent is not found.
        _agent, version = self._lookups.get(agent_id, version_id, current_tenant())
        if version is not None:
            return version
        if version_id:
            raise version_not_found(agent_id, version_id)
        raise FailedPrecondition(
            f"agent {agent_id!r} has no trained version yet",
            code="NO_ACTIVE_VERSION",
            hint="Train the agent with TrainAgent first, or name a version_id.",
        )

    def predictor(self, version: AgentVersion) -> Any:
        """The loaded model of a version (cached); call from a worker thread."""
        return self._predictor(version)

    def _score(self, version: AgentVersion, texts: list[str]) -> Scores:
        scores: Scores = self._predictor(version).score(texts)
        return scores

    def _predictor(self, version: AgentVersion) -> Any:
        with self._cache_lock:
            predictor = self._cache.get(version.version_id)
            if predictor is not None:
                self._cache.move_to_end(version.version_id)
                return predictor
        # Loading imports torch on first use: the server starts fast and pays once. The files'
        # checksums and shapes are checked here, once per load, never per call; a damaged
        # version raises VERSION_DAMAGED and is not cached.
        predictor = load_version_predictor(self._data_dir, version)
        with self._cache_lock:
            self._cache[version.version_id] = predictor
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return predictor
