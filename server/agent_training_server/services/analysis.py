"""AnalyzeAndOptimize: evaluate a version, measure candidate optimisations, apply one.

Goals served so far: improve_calibration (temperature scaling) and maximize_coverage (threshold
sweep). Their suggestions change only behaviour settings, so applying one makes a new version
that shares the analysed version's weights. A suggestion id carries what it would set, so it can
be applied later without the service remembering it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from agent_training_server.analysis import metrics, optimize
from agent_training_server.domain import AgentVersion
from agent_training_server.engines.base import Example
from agent_training_server.engines.evaluation import stratified_split
from agent_training_server.errors import FailedPrecondition, InvalidArgument, Unimplemented
from agent_training_server.services.agents import AgentService, new_id
from agent_training_server.services.inference import InferenceService
from agent_training_server.services.jobs import examples_from_bytes
from agent_training_server.store.base import Store

SERVED_GOALS = ("improve_calibration", "maximize_coverage")
LATENCY_CALLS = 200
BATCH_SIZE = 256
BATCH_CALLS = 10
MAX_TEMPERATURE = 10.0


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """One measured optimisation."""

    suggestion_id: str
    goal: str
    action: str
    rationale: str
    before: dict[str, float]
    after: dict[str, float]
    applicable: bool


@dataclasses.dataclass(frozen=True)
class Report:
    """An analysis and its suggestions."""

    version: AgentVersion
    evaluation: metrics.Evaluation
    latency: optimize.Latency
    batch_latency: optimize.Latency
    training_curve_summary: str
    suggestions: list[Suggestion]


class AnalysisService:
    """Analyses versions and applies suggestions."""

    def __init__(self, store: Store, agents: AgentService, inference: InferenceService) -> None:
        self._store = store
        self._agents = agents
        self._inference = inference

    async def analyze(
        self,
        agent_id: str,
        version_id: str,
        evaluation: Sequence[Example] | None,
        goals: Sequence[str],
    ) -> Report:
        """Evaluate a version (the active one by default) and measure suggestions for `goals`."""
        not_served = [goal for goal in goals if goal not in SERVED_GOALS]
        if not_served:
            raise Unimplemented(
                f"optimization goal(s) {', '.join(not_served)} are not measured by this server"
                " release",
                code="GOAL_NOT_SERVED",
                hint=f"Served goals: {', '.join(SERVED_GOALS)}; the analysis itself is always"
                " returned.",
            )
        version = await self._version(agent_id, version_id)
        examples = list(evaluation) if evaluation else await self._held_out(version)
        predictor = await asyncio.to_thread(self._inference.predictor, version)
        return await asyncio.to_thread(self._report, version, predictor, examples, goals)

    def _report(
        self, version: AgentVersion, predictor: Any, examples: list[Example], goals: Sequence[str]
    ) -> Report:
        inputs = [e.input for e in examples]
        expected = [e.expected_output for e in examples]
        outputs = list(version.outputs)
        raw = predictor.predict_proba(inputs)
        behavior = version.behavior
        probabilities = metrics.tempered(raw, behavior.temperature)
        evaluation = metrics.evaluate(
            inputs, expected, outputs, probabilities, behavior.confidence_threshold
        )

        def score(texts: list[str]) -> np.ndarray:
            return predictor.predict_proba(texts)

        latency = optimize.measure_latency(score, inputs, 1, LATENCY_CALLS)
        batch = optimize.measure_latency(score, inputs, BATCH_SIZE, BATCH_CALLS)
        configured = int(version.manifest.get("config", {}).get("epochs", 0) or 0)
        suggestions = []
        for goal in dict.fromkeys(goals):
            if goal == "improve_calibration":
                suggestions.append(_calibration(version, expected, outputs, raw))
            elif goal == "maximize_coverage":
                suggestions.append(_coverage(version, expected, outputs, probabilities))
        return Report(
            version=version,
            evaluation=evaluation,
            latency=latency,
            batch_latency=batch,
            training_curve_summary=optimize.training_curve_summary(version.metrics, configured),
            suggestions=suggestions,
        )

    async def apply(self, agent_id: str, suggestion_id: str, activate: bool) -> AgentVersion:
        """Make a new version from a suggestion; it becomes active only if `activate`."""
        change = decode_suggestion(suggestion_id)
        version = await self._version(agent_id, change["version_id"])
        behavior = version.behavior
        if "temperature" in change:
            behavior = dataclasses.replace(behavior, temperature=change["temperature"])
            what = f"temperature {version.behavior.temperature:g} -> {change['temperature']:g}"
        else:
            behavior = dataclasses.replace(behavior, confidence_threshold=change["threshold"])
            what = (
                f"confidence threshold {version.behavior.confidence_threshold:g}"
                f" -> {change['threshold']:g}"
            )
        made = dataclasses.replace(
            version,
            version_id=new_id("ver"),
            version_number=0,
            source="optimization",
            training_id="",
            parent_version_id=version.version_id,
            behavior=behavior,
            description=f"applied {suggestion_id[:24]}...: {what}",
            create_time=time.time(),
        )
        return await asyncio.to_thread(self._store.add_version, made, activate)

    async def _version(self, agent_id: str, version_id: str) -> AgentVersion:
        agent = await self._agents.get(agent_id)
        version_id = version_id or agent.active_version_id
        if not version_id:
            raise FailedPrecondition(
                f"agent {agent_id!r} has no trained version yet",
                code="NO_ACTIVE_VERSION",
                hint="Train the agent first, or name a version_id.",
            )
        return await self._agents.get_version(agent_id, version_id)

    async def _held_out(self, version: AgentVersion) -> list[Example]:
        """The validation split the version was measured on (supervised versions)."""
        config = version.manifest.get("config", {})
        data_sha256 = version.manifest.get("data_sha256", "")
        if version.training_type != "supervised" or not data_sha256:
            raise FailedPrecondition(
                f"version {version.version_id} has no held-out split this service can rebuild",
                code="NO_EVALUATION_DATA",
                hint="Pass evaluation_data or dataset_id (the held-out split is rebuilt for"
                " supervised versions only).",
            )
        data = await asyncio.to_thread(self._store.load_dataset, data_sha256)
        examples = _taught(examples_from_bytes(data))
        column = {output: index for index, output in enumerate(version.outputs)}
        labels = np.array([column[e.expected_output] for e in examples], dtype=np.int64)
        train_rows, valid_rows = stratified_split(
            labels, float(config.get("validation_split", 0.1)), int(config.get("seed", 0))
        )
        if valid_rows is train_rows or len(valid_rows) == 0:
            raise FailedPrecondition(
                "the version was trained without a held-out validation split",
                code="NO_EVALUATION_DATA",
                hint="Pass evaluation_data or dataset_id.",
            )
        return [examples[i] for i in valid_rows]


def _taught(examples: list[Example]) -> list[Example]:
    from agent_training_server.engines.supervised import taught

    return taught(examples)


def encode_suggestion(version_id: str, **change: float) -> str:
    """A self-describing suggestion id: what to set, on which version."""
    payload = json.dumps({"version_id": version_id, **change}, sort_keys=True).encode()
    return "sug_" + base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_suggestion(suggestion_id: str) -> dict[str, Any]:
    """The change a suggestion id stands for. Raises InvalidArgument for a bad id."""
    try:
        token = suggestion_id.removeprefix("sug_")
        change = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        version_id = change["version_id"]
        if not isinstance(version_id, str):
            raise ValueError
        if "temperature" in change:
            if not 0 < float(change["temperature"]) <= MAX_TEMPERATURE:
                raise ValueError
        elif not 0 <= float(change["threshold"]) <= 1:
            raise ValueError
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(
            f"apply_suggestion_id {suggestion_id[:40]!r} is not a suggestion id",
            hint="Pass a suggestion_id from an AnalyzeAndOptimize response unchanged.",
        ) from None
    return change


def _calibration(
    version: AgentVersion, expected: list[str], outputs: list[str], raw: np.ndarray
) -> Suggestion:
    current = version.behavior.temperature
    fit = optimize.fit_temperature(expected, outputs, raw, current)
    before = {"expected_calibration_error": fit.ece_before, "log_loss": fit.log_loss_before}
    after = {"expected_calibration_error": fit.ece_after, "log_loss": fit.log_loss_after}
    better = fit.ece_after < fit.ece_before and abs(fit.temperature - current) > 1e-6
    return Suggestion(
        suggestion_id=encode_suggestion(version.version_id, temperature=fit.temperature)
        if better
        else "",
        goal="improve_calibration",
        action=f"set the temperature to {fit.temperature:.3g} (now {current:g})"
        if better
        else "keep the temperature: no fitted temperature calibrates better",
        rationale=f"expected calibration error {fit.ece_before:.3f} on the evaluation set;"
        " measured after by two-fold cross-fitting (fit on one half, measured on the other)",
        before=before,
        after=after if better else before,
        applicable=better,
    )


def _coverage(
    version: AgentVersion, expected: list[str], outputs: list[str], probabilities: np.ndarray
) -> Suggestion:
    current = version.behavior.confidence_threshold
    now, suggested = optimize.sweep_threshold(expected, outputs, probabilities, current)
    better = suggested.coverage > now.coverage
    fields = ("coverage", "accuracy_when_answered", "threshold")
    before = {name: getattr(now, name) for name in fields}
    after = {name: getattr(suggested, name) for name in fields}
    return Suggestion(
        suggestion_id=encode_suggestion(version.version_id, threshold=suggested.threshold)
        if better
        else "",
        goal="maximize_coverage",
        action=f"lower the confidence threshold to {suggested.threshold:.3g} (now {current:g})"
        if better
        else "keep the threshold: it already answers every input it can answer as precisely",
        rationale=f"answers {now.coverage:.1%} of the evaluation inputs at threshold"
        f" {current:g}, {now.accuracy_when_answered:.1%} of them correctly; the sweep keeps"
        f" answered accuracy within {optimize.COVERAGE_PRECISION_SLACK:.1%}",
        before=before,
        after=after if better else before,
        applicable=better,
    )


def check_goals(goals: Sequence[str]) -> None:
    """Refuse an empty goal (the enum's zero value)."""
    if any(not goal for goal in goals):
        raise InvalidArgument(
            "optimization_goals holds OPTIMIZATION_GOAL_UNSPECIFIED",
            hint="Name goals such as OPTIMIZATION_GOAL_IMPROVE_CALIBRATION.",
        )
