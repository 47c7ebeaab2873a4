"""AdaptAgentBehavior: change an agent's behaviour from production metrics and feedback, safely.

Every adaptation is a new version (same weights, changed behaviour settings) that can be rolled
back with ActivateAgentVersion; a dry run computes the same changes and stores nothing. The
metrics a caller reports are kept per version, which is what `rollback` compares.

Strategies served:
- threshold: move the confidence threshold to the operating point that meets `targets`
  (`success_rate`: share of answered queries that are right; or `escalation_rate`: the most
  answers that may go to the fallback), measured on the feedback recorded for the active version
  when there is enough of it, else on the version's held-out validation split; `oos_recall`
  (share of out-of-scope inputs that must get the fallback) moves the out-of-scope threshold
  instead, to the highest one flagging that share of the held-out split's out-of-scope examples
  (those labelled with the fallback output; feedback does not say which inputs were out of scope);
- conservative / aggressive: the same moves, bounded to 0.05 / 0.25 of threshold per call;
- calibration: refit the temperature on the same data (log-loss), as AnalyzeAndOptimize does;
- rollback: when the reported success rate (or satisfaction) fell below an earlier version's,
  return to the best earlier version's weights and behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from agent_training_server.analysis import metrics as analysis_metrics
from agent_training_server.analysis import optimize, search
from agent_training_server.artifacts import (
    derived_version,
    load_version_files,
    write_version_files,
)
from agent_training_server.domain import AgentVersion, BehaviorSettings, RolloutRequest
from agent_training_server.engines.base import Artifact, Example
from agent_training_server.engines.defaults import defaults_for
from agent_training_server.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unimplemented,
)
from agent_training_server.metrics import Metrics
from agent_training_server.services.agents import AgentService
from agent_training_server.services.analysis import AnalysisService
from agent_training_server.services.inference import InferenceService
from agent_training_server.services.rollouts import new_rollout
from agent_training_server.store.base import RolloutRunning, Store

RATE_METRICS = ("success_rate", "user_satisfaction", "escalation_rate")
KNOWN_METRICS = (*RATE_METRICS, "latency_p95_ms")
STRATEGIES = ("threshold", "conservative", "aggressive", "calibration", "rollback", "reinforcement")
CONFIDENCE_Z = 1.645
"""One-sided 95%: the new policy's estimate must beat the current one by this many standard
errors to be accepted."""
STEP_LIMITS = {"threshold": 1.0, "conservative": 0.05, "aggressive": 0.25}
MIN_FEEDBACK = 30
"""Feedback on the active version needed before it, not the validation split, sets the point."""
DEGRADATION = 0.01
"""How far a reported rate must fall below an earlier version's before rollback acts."""
CONFIDENCE_TARGETS = ("success_rate", "escalation_rate")
"""Targets that move the confidence threshold (`oos_recall` moves the out-of-scope one)."""
OUT_OF_SCOPE_HINT = (
    "Pass evaluation data with out-of-scope examples (the fallback output as their expected"
    " output) to AnalyzeAndOptimize with OPTIMIZATION_GOAL_MAXIMIZE_OOS_RECALL and apply its"
    " suggestion, or train a supervised version with examples labelled with the fallback"
    " output: config.validation_split of them is held out, and measured here."
)


@dataclasses.dataclass(frozen=True)
class Change:
    """One setting changed, and why."""

    setting: str
    old_value: str
    new_value: str
    reason: str
    evidence: dict[str, float]


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """What AdaptAgentBehavior decided."""

    previous_version_id: str
    version: AgentVersion | None
    changes: list[Change]
    ignored_metrics: list[str]
    summary: str
    active_version_id: str
    """The agent's active version once the adaptation is stored (the new one, when made)."""
    rollout_id: str = ""
    """The rollout the new version started, when asked for one."""


def check_metrics(metrics: Mapping[str, float]) -> list[str]:
    """Refuse malformed known metrics; return the unknown names (reported, not used)."""
    if not metrics:
        raise InvalidArgument(
            "performance_metrics is empty",
            hint=f"Report at least one of {', '.join(KNOWN_METRICS)}.",
        )
    for name, value in metrics.items():
        if name in RATE_METRICS and not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InvalidArgument(
                f"performance_metrics[{name!r}] is {value}; rates are in [0, 1]",
                hint="Send rates as fractions, e.g. 0.85 for 85%.",
            )
        if name == "latency_p95_ms" and not (math.isfinite(value) and value >= 0):
            raise InvalidArgument(
                f"performance_metrics['latency_p95_ms'] is {value}; it must be 0 or more",
                hint="Send the 95th percentile latency in milliseconds.",
            )
    return sorted(name for name in metrics if name not in KNOWN_METRICS)


class AdaptationService:
    """Adapts agents' behaviour, one adaptation per agent at a time."""

    def __init__(
        self,
        store: Store,
        agents: AgentService,
        inference: InferenceService,
        analysis: AnalysisService,
        data_dir: Path,
        metrics: Metrics | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._metrics = metrics
        self._store = store
        self._agents = agents
        self._inference = inference
        self._analysis = analysis
        self._locks: dict[str, asyncio.Lock] = {}

    async def adapt(
        self,
        agent_id: str,
        metrics: Mapping[str, float],
        strategy: str,
        targets: Mapping[str, float],
        dry_run: bool,
        rollout: RolloutRequest | None = None,
    ) -> Adaptation:
        """Decide and (unless `dry_run`) store one adaptation.

        With ``rollout`` the new version starts that rollout instead of becoming active.
        """
        ignored = check_metrics(metrics)
        if strategy not in STRATEGIES:
            raise Unimplemented(
                f"adaptation strategy {strategy} is not served by this server release",
                code="STRATEGY_NOT_SERVED",
                hint=f"Served strategies: {', '.join(STRATEGIES)}.",
            )
        lock = self._locks.setdefault(agent_id, asyncio.Lock())
        # One adaptation of an agent at a time: a second waits and then sees the first's result,
        # so two concurrent adaptations cannot both win silently.
        async with lock:
            agent = await self._agents.get(agent_id)
            if not agent.active_version_id:
                raise FailedPrecondition(
                    f"agent {agent_id!r} has no trained version to adapt",
                    code="NO_ACTIVE_VERSION",
                    hint="Train the agent first.",
                )
            active = await self._agents.get_version(agent_id, agent.active_version_id)
            if rollout is not None and not dry_run:
                running = await asyncio.to_thread(self._store.running_rollout, agent_id)
                if running is not None:
                    raise FailedPrecondition(
                        f"agent {agent_id!r} has a running rollout ({running.rollout_id})",
                        code="ROLLOUT_RUNNING",
                        hint="End it with PromoteRollout or AbortRollout first, or adapt"
                        " without `rollout`.",
                    )
            if strategy != "rollback":  # rolling back is the way out of a damaged version
                # Loads (and checks, once) the weights: a damaged version is not adapted.
                await asyncio.to_thread(self._inference.predictor, active)
            known = {k: float(v) for k, v in metrics.items() if k in KNOWN_METRICS}
            if not dry_run:
                await asyncio.to_thread(
                    self._store.record_performance, agent_id, active.version_id, known
                )
            note = ""
            if strategy == "rollback":
                made, changes = await self._rollback(active, known)
            elif strategy == "reinforcement":
                made, changes, note = await self._reinforce(active, dry_run)
            else:
                made, changes = await self._retune(active, strategy, targets)
            stored, rollout_id = None, ""
            if made is not None and not dry_run and changes:
                stored = await asyncio.to_thread(self._store.add_version, made, rollout is None)
                if rollout is not None:
                    rollout_id = await self._start_rollout(stored, active, rollout)
                if self._metrics is not None:
                    self._metrics.adaptations.labels(strategy).inc()
            summary = (
                f"{len(changes)} change(s) {'proposed (dry run)' if dry_run else 'made'}"
                if changes
                else "no change: " + (note or "nothing to improve")
            )
            now_active = (
                stored.version_id if stored is not None and rollout is None else active.version_id
            )
            return Adaptation(
                active.version_id, stored, changes, ignored, summary, now_active, rollout_id
            )

    async def _start_rollout(
        self, made: AgentVersion, active: AgentVersion, request: RolloutRequest
    ) -> str:
        """Start the asked rollout of the adapted version; return its id.

        "" if one started meanwhile: the version is kept, not active, for StartRollout.
        """
        rollout = new_rollout(made.agent_id, made.version_id, active.version_id, request)
        try:
            made_rollout = await asyncio.to_thread(self._store.create_rollout, rollout)
        except RolloutRunning:
            return ""
        return made_rollout.rollout_id

    async def _retune(
        self, active: AgentVersion, strategy: str, targets: Mapping[str, float]
    ) -> tuple[AgentVersion | None, list[Change]]:
        behavior = active.behavior
        if strategy == "calibration":
            return await self._recalibrated(active)
        step = STEP_LIMITS[strategy]
        changes = []
        if "oos_recall" not in targets or set(CONFIDENCE_TARGETS) & targets.keys():
            confidence, success, source = await self._operating_data(active)
            point, evidence, why = _operating_point(confidence, success, targets)
            old = behavior.confidence_threshold
            new = old + max(-step, min(step, point - old))
            new = round(new, 4)
            evidence = {**evidence, "examples": float(len(confidence))}
            if abs(new - old) >= 1e-9:
                changes.append(
                    Change(
                        "confidence_threshold",
                        f"{old:g}",
                        f"{new:g}",
                        f"{why}; measured on {source}"
                        + (
                            f"; step bounded to {step:g} ({strategy})"
                            if new != round(point, 4)
                            else ""
                        ),
                        evidence,
                    )
                )
                behavior = dataclasses.replace(behavior, confidence_threshold=new)
        if "oos_recall" in targets:
            # Measured with the confidence threshold just set: it sends inputs to the fallback too.
            moved = await self._out_of_scope_move(
                active, behavior, step, float(targets["oos_recall"])
            )
            if moved is not None:
                threshold, change = moved
                changes.append(change)
                behavior = dataclasses.replace(behavior, out_of_scope_threshold=threshold)
        if not changes:
            return None, []
        return _adapted(active, behavior, *changes), changes

    async def _out_of_scope_move(
        self, active: AgentVersion, behavior: BehaviorSettings, step: float, target: float
    ) -> tuple[float, Change] | None:
        """The out-of-scope threshold reaching `target` recall, and the change; None if it stays.

        Measured on the held-out split, bounded to `step` from the current threshold.

        Raises:
            InvalidArgument: the held-out split has no out-of-scope example.
        """
        rows, source = await self._out_of_scope_rows(active)
        point, reached = optimize.recall_threshold(rows, behavior.confidence_threshold, target)
        old = behavior.out_of_scope_threshold
        # Not rounded: a threshold between two held-out scores keeps both on their side.
        new = min(1.0, max(0.0, old + max(-step, min(step, point - old))))
        if abs(new - old) < 1e-12:
            return None
        at_point = analysis_metrics.out_of_scope(rows, behavior.confidence_threshold, point)
        measured = analysis_metrics.out_of_scope(rows, behavior.confidence_threshold, new)
        assert at_point is not None and measured is not None  # _out_of_scope_rows checked
        why = (
            f"the highest out-of-scope threshold whose recall meets the target {target:.3f}"
            if reached
            else f"the target {target:.3f} is out of reach: the lowest threshold flags"
            f" {at_point.recall:.1%} of the out-of-scope examples"
        )
        bounded = f"; step bounded to {step:g}" if abs(new - point) > 1e-12 else ""
        change = Change(
            "out_of_scope_threshold",
            f"{old:g}",
            f"{new:g}",
            f"{why} (flags {measured.recall:.1%} of the out-of-scope examples, answers"
            f" {measured.in_scope_coverage:.1%} of the in-scope ones); measured on {source}"
            + bounded,
            {
                "oos_recall": measured.recall,
                "target_oos_recall": target,
                "oos_precision": measured.precision,
                "in_scope_accuracy": measured.in_scope_accuracy,
                "in_scope_coverage": measured.in_scope_coverage,
                "out_of_scope_examples": float(measured.out_of_scope_count),
                "in_scope_examples": float(measured.in_scope_count),
                "examples": float(measured.out_of_scope_count + measured.in_scope_count),
            },
        )
        return new, change

    async def _out_of_scope_rows(
        self, active: AgentVersion
    ) -> tuple[analysis_metrics.OutOfScopeRows, str]:
        """The held-out split's answers, for the out-of-scope measures.

        Raises:
            InvalidArgument: it has no example labelled with the fallback output (or there is
                no held-out split).
        """
        fallback = active.behavior.fallback_output
        try:
            examples = await self._analysis.held_out(active)
        except FailedPrecondition as error:
            examples, missing = [], f"{error.message}, so it has no out-of-scope example"
        else:
            missing = (
                f"its held-out validation split ({len(examples)} examples) has no example"
                f" labelled with the fallback output {fallback!r}"
            )
        if not any(e.expected_output == fallback for e in examples):
            raise InvalidArgument(
                f"targets['oos_recall'] is measured on out-of-scope examples: {missing}",
                hint=OUT_OF_SCOPE_HINT,
                violations=[FieldViolation("targets['oos_recall']", missing)],
            )
        predictor = await asyncio.to_thread(self._inference.predictor, active)
        scored = await asyncio.to_thread(predictor.score, [e.input for e in examples])
        probabilities = analysis_metrics.tempered(scored.probabilities, active.behavior.temperature)
        rows = analysis_metrics.OutOfScopeRows.of(
            [e.expected_output for e in examples],
            list(active.outputs),
            probabilities,
            scored.out_of_scope,
            fallback,
        )
        return rows, f"the held-out validation split ({len(examples)} examples)"

    async def _recalibrated(self, active: AgentVersion) -> tuple[AgentVersion | None, list[Change]]:
        """Refit the temperature on the held-out validation split (labels are needed)."""
        examples = await self._analysis.held_out(active)
        predictor = await asyncio.to_thread(self._inference.predictor, active)
        raw = await asyncio.to_thread(predictor.predict_proba, [e.input for e in examples])
        expected = [e.expected_output for e in examples]
        old = active.behavior.temperature
        fit = optimize.fit_temperature(expected, list(active.outputs), raw, old)
        if fit.ece_after >= fit.ece_before or abs(fit.temperature - old) < 1e-6:
            return None, []
        change = Change(
            "temperature",
            f"{old:g}",
            f"{fit.temperature:.4g}",
            f"expected calibration error {fit.ece_before:.4f} -> {fit.ece_after:.4f} on the"
            f" held-out validation split ({len(examples)} examples, two-fold cross-fitted)",
            {
                "expected_calibration_error_before": fit.ece_before,
                "expected_calibration_error_after": fit.ece_after,
                "examples": float(len(examples)),
            },
        )
        behavior = dataclasses.replace(active.behavior, temperature=float(fit.temperature))
        return _adapted(active, behavior, change), [change]

    async def _operating_data(self, active: AgentVersion) -> tuple[np.ndarray, np.ndarray, str]:
        """(confidence, success) pairs: recorded feedback, or the held-out validation split."""
        recorded = await asyncio.to_thread(
            self._store.list_feedback, active.agent_id, active.create_time
        )
        rows = [
            (invocation.confidence, feedback.reward > 0)
            for feedback, invocation in recorded
            if invocation.version_id == active.version_id and not invocation.explored
        ]
        if len(rows) >= MIN_FEEDBACK:
            confidence = np.array([c for c, _ in rows])
            success = np.array([s for _, s in rows])
            return confidence, success, f"{len(rows)} answers with recorded feedback"
        examples = await self._analysis.held_out(active)
        predictor = await asyncio.to_thread(self._inference.predictor, active)
        probabilities = await asyncio.to_thread(
            predictor.predict_proba, [e.input for e in examples]
        )
        from agent_training_server.analysis.metrics import tempered

        probabilities = tempered(probabilities, active.behavior.temperature)
        best = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(best)), best]
        success = np.array(
            [active.outputs[b] == e.expected_output for b, e in zip(best, examples, strict=True)]
        )
        return confidence, success, f"the held-out validation split ({len(examples)} examples)"

    async def _reinforce(
        self, active: AgentVersion, dry_run: bool
    ) -> tuple[AgentVersion | None, list[Change], str]:
        """Off-policy update from the feedback since the active version, if it provably helps."""
        recorded = await asyncio.to_thread(
            self._store.list_feedback, active.agent_id, active.create_time
        )
        logs = [
            Example(
                invocation.input,
                invocation.output,
                feedback.feedback,
                invocation.context,
                invocation.propensity,
            )
            for feedback, invocation in recorded
        ]
        if len(logs) < MIN_FEEDBACK:
            raise FailedPrecondition(
                f"{len(logs)} answers have feedback since the active version; reinforcement"
                f" needs {MIN_FEEDBACK}",
                code="NOT_ENOUGH_FEEDBACK",
                hint="Record feedback on more InvokeAgent answers with RecordFeedback first.",
            )
        rewards = np.array([feedback.reward for feedback, _ in recorded])
        # Policy training is heavy: it runs where the analysis's retrainings run (a worker).
        artifact = await self._analysis.work.run_work(_train_policy, self._data_dir, active, logs)
        value = float(artifact.metrics["policy_value"])
        current = float(rewards.mean())
        held_out = max(1, int(artifact.metrics.get("validation_examples", 0) or len(logs)))
        stderr = float(np.sqrt(max(rewards.var(), 1e-6) / held_out))
        margin = value - CONFIDENCE_Z * stderr - current
        evidence = {
            "policy_value_new": value,
            "policy_value_current": current,
            "standard_error": stderr,
            "logged_answers": float(len(logs)),
        }
        if margin <= 0:
            return (
                None,
                [],
                f"the update was not accepted: estimated reward {value:.3f} against"
                f" {current:.3f} now, not beyond {CONFIDENCE_Z} standard errors ({stderr:.3f})",
            )
        exploration = float(min(0.2, max(0.02, 1.0 / np.sqrt(len(logs)))))
        changes = [
            Change(
                "weights",
                active.version_id,
                "retrained",
                f"off-policy update from {len(logs)} answers with feedback: estimated reward"
                f" {value:.3f} against {current:.3f} now, beyond {CONFIDENCE_Z} standard errors"
                f" ({stderr:.3f})",
                evidence,
            ),
            Change(
                "exploration_rate",
                f"{active.behavior.exploration_rate:g}",
                f"{exploration:.3g}",
                f"remaining uncertainty: 1/sqrt({len(logs)} logged answers), within [0.02, 0.2]",
                {"logged_answers": float(len(logs))},
            ),
        ]
        if dry_run:
            return None, changes, ""
        files = await asyncio.to_thread(
            write_version_files, self._data_dir, active.agent_id, artifact
        )
        made = derived_version(
            active,
            "adaptation",
            changes[0].reason,
            files,
            training_type="reinforcement",
            outputs=tuple(artifact.outputs),
            metrics=artifact.metrics,
            behavior=dataclasses.replace(active.behavior, exploration_rate=exploration),
        )
        return made, changes, ""

    async def _rollback(
        self, active: AgentVersion, reported: Mapping[str, float]
    ) -> tuple[AgentVersion | None, list[Change]]:
        metric = "success_rate" if "success_rate" in reported else "user_satisfaction"
        if metric not in reported:
            raise InvalidArgument(
                "rollback compares success_rate or user_satisfaction, and neither was reported",
                hint="Report performance_metrics.success_rate (or user_satisfaction).",
            )
        history = await asyncio.to_thread(self._store.performance_history, active.agent_id)
        earlier = [
            (values[metric], version_id)
            for version_id, values in history.items()
            if version_id != active.version_id and metric in values
        ]
        if not earlier:
            return None, []
        best_value, best_id = max(earlier)
        now = reported[metric]
        if now >= best_value - DEGRADATION:
            return None, []
        best = await self._agents.get_version(active.agent_id, best_id)
        change = Change(
            "version",
            active.version_id,
            best.version_id,
            f"{metric} fell to {now:.3f} from {best_value:.3f} on {best.version_id}: its weights"
            " and behaviour return",
            {f"{metric}_now": now, f"{metric}_best_earlier": best_value},
        )
        made = derived_version(
            best,
            "adaptation",
            f"rollback to {best.version_id}: {change.reason}",
            parent_version_id=active.version_id,
        )
        return made, [change]


def _operating_point(
    confidence: np.ndarray, success: np.ndarray, targets: Mapping[str, float]
) -> tuple[float, dict[str, float], str]:
    """The threshold that meets the target, with what it gives on the data."""
    candidates = np.unique(np.concatenate(([0.0], confidence)))

    def at(threshold: float) -> tuple[float, float]:
        answered = confidence >= threshold
        rate = float(success[answered].mean()) if answered.any() else 0.0
        return rate, float(answered.mean())

    if "success_rate" in targets:
        goal = float(targets["success_rate"])
        for threshold in candidates:  # lowest first: the most answers that meet the target
            rate, coverage = at(threshold)
            if rate >= goal:
                return (
                    float(threshold),
                    {"success_rate": rate, "coverage": coverage, "target_success_rate": goal},
                    f"the lowest threshold whose answered success rate {rate:.3f} meets"
                    f" the target {goal:.3f} (answers {coverage:.1%})",
                )
        rates = [at(t)[0] for t in candidates]
        index = int(np.argmax(rates))
        rate, coverage = at(candidates[index])
        return (
            float(candidates[index]),
            {"success_rate": rate, "coverage": coverage, "target_success_rate": goal},
            f"the target {goal:.3f} is out of reach: the best answered success rate is"
            f" {rate:.3f} (answers {coverage:.1%})",
        )
    if "escalation_rate" in targets:
        budget = float(targets["escalation_rate"])
        threshold = float(np.quantile(confidence, budget)) if len(confidence) else 0.0
        rate, coverage = at(threshold)
        return (
            threshold,
            {
                "success_rate": rate,
                "escalation_rate": 1 - coverage,
                "target_escalation_rate": budget,
            },
            f"the highest threshold within the escalation budget {budget:.3f}"
            f" (escalates {1 - coverage:.1%}, answered success rate {rate:.3f})",
        )
    raise InvalidArgument(
        "this strategy needs targets.success_rate, targets.escalation_rate or targets.oos_recall",
        hint='Pass targets such as {"success_rate": 0.9}.',
    )


def _adapted(active: AgentVersion, behavior: object, *changes: Change) -> AgentVersion:
    return derived_version(
        active,
        "adaptation",
        "; ".join(f"{c.setting} {c.old_value} -> {c.new_value}: {c.reason}" for c in changes),
        behavior=behavior,
    )


def _train_policy(
    data_dir: Path,
    active: AgentVersion,
    logs: list[Example],
    progress: Callable[[str, int, int, float], None] | None = None,
) -> Artifact:
    """The reinforcement engine, starting from the active version's weights (in a worker)."""
    spec, tensors, _outputs = load_version_files(data_dir, active)
    return search.train("reinforcement", logs, defaults_for("reinforcement"), (spec, tensors))
