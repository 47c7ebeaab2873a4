"""AnalyzeAndOptimize: evaluate a version, measure candidate optimisations, apply one.

Every goal of the contract is measured (see docs/analysis.md): calibration, coverage and
out-of-scope recall change behaviour settings (the new version shares the weights); size and
latency compact the weights; accuracy and balance retrain on the version's own data. A
suggestion id carries what it would do, so it can be applied later without the service
remembering it.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent_training_server.analysis import compaction, metrics, optimize, search
from agent_training_server.artifacts import (
    derived_version,
    load_version_files,
    load_version_predictor,
    write_version_files,
)
from agent_training_server.cancellation import raise_if_cancelled
from agent_training_server.domain import AgentVersion
from agent_training_server.engines import negatives, registry, supervised
from agent_training_server.engines.base import Artifact, Example, TrainSettings
from agent_training_server.errors import FailedPrecondition, FieldViolation, InvalidArgument
from agent_training_server.jobs.work import InThread, WorkRunner
from agent_training_server.services.agents import AgentService
from agent_training_server.services.inference import InferenceService
from agent_training_server.services.jobs import examples_from_bytes
from agent_training_server.store.base import IdempotencyKey, Store

WEAKEST_OUTPUTS = 5
"""Outputs balance_outputs tries to lift: the lowest F1 on the evaluation set."""
BALANCE_VARIANTS = 5
"""Paraphrases made per training example of a weak output."""
LATENCY_SPEEDUP = 1.5
"""Speed-up a minimize_latency candidate must reach to be suggested."""
ProgressCallback = Callable[[str, int, int, float], None]
"""progress(phase, examples scored, examples in all, percent complete), from the analysis thread."""

SCORING_CHUNK = 2_000
"""Evaluation examples scored between two progress reports."""

LATENCY_CALLS = 200
BATCH_SIZE = 256
BATCH_CALLS = 10
MAX_TEMPERATURE = 10.0
DEFAULT_RETENTION = 0.95
"""maximize_oos_recall: share of in-scope examples kept answered when the request sets none."""
OUT_OF_SCOPE_HINT = (
    "Pass evaluation data that holds out-of-scope examples (messages the agent should not"
    " answer, with the version's fallback output as their expected output), or train the agent"
    " with examples labelled with the fallback output."
)


@dataclasses.dataclass(frozen=True)
class GoalSettings:
    """What a request says about how its goals are measured."""

    in_scope_retention: float = DEFAULT_RETENTION
    """maximize_oos_recall: share of the in-scope examples the threshold keeps answered."""


DEFAULT_GOAL_SETTINGS = GoalSettings()


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
    synthetic_sources: tuple[tuple[str, str], ...] = ()
    """balance_outputs: (input, output) training examples to paraphrase, BALANCE_VARIANTS each."""


@dataclasses.dataclass(frozen=True)
class Report:
    """An analysis and its suggestions."""

    version: AgentVersion
    evaluation: metrics.Evaluation
    latency: optimize.Latency
    batch_latency: optimize.Latency
    training_curve_summary: str
    suggestions: list[Suggestion]
    out_of_scope: metrics.OutOfScope | None = None
    """Out-of-scope detection; None when no evaluation example is out of scope."""


class AnalysisService:
    """Analyses versions and applies suggestions.

    The retrainings (maximize_accuracy, balance_outputs, applying either) go to ``work``, the
    job manager's workers (JobManager.run_work), so that they cannot slow the RPC process; the
    rest (scoring with the cached model, temperature and threshold fits, compaction) is light
    and runs in a thread here. Without ``work`` everything runs in threads here.
    """

    def __init__(
        self,
        store: Store,
        agents: AgentService,
        inference: InferenceService,
        data_dir: Path,
        work: WorkRunner | None = None,
    ) -> None:
        self._store = store
        self._agents = agents
        self._inference = inference
        self._data_dir = data_dir
        self._work = work or InThread()

    @property
    def work(self) -> WorkRunner:
        """Where heavy work runs (AdaptationService uses the same)."""
        return self._work

    async def analyze(
        self,
        agent_id: str,
        version_id: str,
        evaluation: Sequence[Example] | None,
        goals: Sequence[str],
        *,
        max_examples: int,
        progress: ProgressCallback | None = None,
        settings: GoalSettings = DEFAULT_GOAL_SETTINGS,
    ) -> Report:
        """Evaluate a version (the active one by default) and measure suggestions for `goals`.

        Raises:
            FailedPrecondition: more than `max_examples` to evaluate (the caller's limit).
        """
        version = await self._version(agent_id, version_id)
        examples = list(evaluation) if evaluation else await self.held_out(version)
        if "maximize_oos_recall" in goals:
            check_out_of_scope_goal(examples, version.behavior.fallback_output, list(goals))
        if len(examples) > max_examples:
            raise FailedPrecondition(
                f"{len(examples)} evaluation examples; this call analyses at most {max_examples}",
                code="EVALUATION_TOO_LARGE",
                hint="Use AnalyzeAndOptimizeStream, which reports progress while it works, or"
                " a smaller evaluation set.",
            )
        training_data = None
        if {"maximize_accuracy", "balance_outputs"} & set(goals) and (
            version.training_type == "supervised"
        ):
            training_data = await self._training_data(version)
        # Loads (and checks, once) the weights: a damaged version fails here, as for InvokeAgent.
        predictor = await asyncio.to_thread(self._inference.predictor, version)
        if training_data is not None:  # the goals retrain: the whole analysis goes to a worker
            return await self._work.run_work(
                report_in_worker,
                self._data_dir,
                version,
                examples,
                list(goals),
                settings,
                training_data,
                progress=progress,
            )
        return await asyncio.to_thread(
            build_report,
            self._data_dir,
            version,
            predictor,
            examples,
            goals,
            settings,
            None,
            progress,
        )

    async def apply(
        self,
        agent_id: str,
        suggestion_id: str,
        activate: bool,
        key: IdempotencyKey | None = None,
    ) -> AgentVersion:
        """Make a new version from a suggestion; it becomes active only if `activate`.

        With a `key` (the request_id), a retry returns the version the first call made.
        """
        change = decode_suggestion(suggestion_id)
        if key is not None:
            replayed = await asyncio.to_thread(self._store.replayed_version, agent_id, key)
            if replayed is not None:
                return replayed
        version = await self._version(agent_id, change["version_id"])
        if "epochs" in change or "balance" in change:
            data = await self._training_data(version)
            made = await self._work.run_work(retrained, self._data_dir, version, data, change)
        elif "keep" in change:
            made = await asyncio.to_thread(self._compacted, version, change)
        else:
            made = self._with_behavior(version, change, suggestion_id)
        return await asyncio.to_thread(self._store.add_version, made, activate, key)

    @staticmethod
    def _with_behavior(
        version: AgentVersion, change: dict[str, Any], suggestion_id: str
    ) -> AgentVersion:
        """A version sharing the weights, with the suggested temperature or threshold."""
        behavior = version.behavior
        if "temperature" in change:
            behavior = dataclasses.replace(behavior, temperature=change["temperature"])
            what = f"temperature {version.behavior.temperature:g} -> {change['temperature']:g}"
        elif "out_of_scope_threshold" in change:
            new = float(change["out_of_scope_threshold"])
            behavior = dataclasses.replace(behavior, out_of_scope_threshold=new)
            what = f"out-of-scope threshold {version.behavior.out_of_scope_threshold:g} -> {new:g}"
        else:
            behavior = dataclasses.replace(behavior, confidence_threshold=change["threshold"])
            what = (
                f"confidence threshold {version.behavior.confidence_threshold:g}"
                f" -> {change['threshold']:g}"
            )
        return derived_version(
            version,
            "optimization",
            f"applied {suggestion_id[:24]}...: {what}",
            behavior=behavior,
        )

    def _compacted(self, version: AgentVersion, change: dict[str, Any]) -> AgentVersion:
        """A new version whose weights are the compacted ones, in its own artifact folder."""
        spec, tensors, outputs = load_version_files(self._data_dir, version)
        smaller = supervised.compact(tensors, float(change["keep"]), bool(change["int8"]))
        artifact = Artifact(spec=spec, tensors=smaller, outputs=outputs, metrics={},
                            encoder=spec.get("encoder", {}))  # fmt: skip
        files = write_version_files(self._data_dir, version.agent_id, artifact)
        return derived_version(
            version,
            "optimization",
            f"applied: {_variant_words(change)}",
            files,
            parameter_count=sum(t.numel() for k, t in smaller.items() if k.startswith("weight"))
            + int(smaller["bias"].numel()),
        )

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

    async def _training_data(self, version: AgentVersion) -> list[Example]:
        """The data the version was trained on (from its job's stored copy)."""
        data_sha256 = version.manifest.get("data_sha256", "")
        if not data_sha256:
            raise FailedPrecondition(
                f"version {version.version_id} has no stored training data",
                code="NO_TRAINING_DATA",
                hint="Versions made by training jobs keep their data; this one was not.",
            )
        data = await asyncio.to_thread(self._store.load_dataset, data_sha256)
        return examples_from_bytes(data)

    async def held_out(self, version: AgentVersion) -> list[Example]:
        """The validation split the version was measured on.

        The labelled engines split their examples alike (negatives.split over the outputs in
        sorted order), so the split is rebuilt for supervised, transfer and few_shot versions;
        not for a few_shot version that extended another (its earlier outputs come first), nor
        for reinforcement (its examples are logged answers).
        """
        config = version.manifest.get("config", {})
        rebuildable = version.training_type in ("supervised", "transfer", "few_shot") and list(
            version.outputs
        ) == sorted(version.outputs)
        if not rebuildable or not version.manifest.get("data_sha256"):
            raise FailedPrecondition(
                f"version {version.version_id} has no held-out split this service can rebuild",
                code="NO_EVALUATION_DATA",
                hint="Pass evaluation_data or dataset_id (the held-out split is rebuilt for"
                " supervised, transfer and few_shot versions).",
            )
        # Split as the engine did: negatives (examples labelled with the fallback output the
        # job named) are held out at the same fraction, so the split measures out-of-scope
        # detection too; examples of no known output (none, unless the data changed) are not.
        negative_output = str(config.get("negative_output", ""))
        known = {*version.outputs, negative_output} - {""}
        examples = [
            e for e in _taught(await self._training_data(version)) if e.expected_output in known
        ]
        labels = negatives.labels_of(
            [e.expected_output for e in examples], list(version.outputs), negative_output
        )
        train_rows, valid_rows = negatives.split(
            labels, float(config.get("validation_split", 0.1)), int(config.get("seed", 0))
        )
        if valid_rows is train_rows or len(valid_rows) == 0:
            raise FailedPrecondition(
                "the version was trained without a held-out validation split",
                code="NO_EVALUATION_DATA",
                hint="Pass evaluation_data or dataset_id.",
            )
        return [examples[i] for i in valid_rows]


def report_in_worker(
    data_dir: Path,
    version: AgentVersion,
    examples: list[Example],
    goals: list[str],
    settings: GoalSettings,
    training_data: list[Example] | None,
    progress: ProgressCallback | None = None,
) -> Report:
    """build_report in a worker process (JobManager.run_work): the model is loaded here."""
    predictor = load_version_predictor(data_dir, version)
    return build_report(
        data_dir, version, predictor, examples, goals, settings, training_data, progress
    )


def build_report(
    data_dir: Path,
    version: AgentVersion,
    predictor: Any,
    examples: list[Example],
    goals: Sequence[str],
    settings: GoalSettings,
    training_data: list[Example] | None,
    progress: ProgressCallback | None,
) -> Report:
    """Score `examples`, measure latency, and measure a suggestion per goal (CPU-bound).

    `training_data` is the version's own data, for the goals that retrain (else None).
    """
    inputs = [e.input for e in examples]
    expected = [e.expected_output for e in examples]
    outputs = list(version.outputs)
    total = len(inputs)

    def report(phase: str, done: int, percent: float) -> None:
        raise_if_cancelled()  # the caller went away: stop between units of work
        if progress is not None:
            progress(phase, done, total, percent)

    parts, out_of_scope_parts = [], []
    for start in range(0, len(inputs), SCORING_CHUNK):
        scored = predictor.score(inputs[start : start + SCORING_CHUNK])
        parts.append(scored.probabilities)
        out_of_scope_parts.append(scored.out_of_scope)
        done = min(len(inputs), start + SCORING_CHUNK)
        report("scoring", done, 60.0 * done / max(1, len(inputs)))
    raw = np.concatenate(parts) if parts else np.zeros((0, len(outputs)), np.float32)
    out_of_scope_scores = (
        np.concatenate(out_of_scope_parts) if out_of_scope_parts else np.zeros(0, np.float64)
    )
    behavior = version.behavior
    probabilities = metrics.tempered(raw, behavior.temperature)
    evaluation = metrics.evaluate(
        inputs, expected, outputs, probabilities, behavior.confidence_threshold
    )
    rows = metrics.OutOfScopeRows.of(
        expected, outputs, probabilities, out_of_scope_scores, behavior.fallback_output
    )
    out_of_scope = metrics.out_of_scope(
        rows, behavior.confidence_threshold, behavior.out_of_scope_threshold
    )

    def score(texts: list[str]) -> np.ndarray:
        return predictor.predict_proba(texts)

    report("measuring_latency", len(inputs), 60.0)
    latency = optimize.measure_latency(score, inputs, 1, LATENCY_CALLS)
    batch = optimize.measure_latency(score, inputs, BATCH_SIZE, BATCH_CALLS)
    report("optimizing", len(inputs), 70.0)
    configured = int(version.manifest.get("config", {}).get("epochs", 0) or 0)
    suggestions = []
    variants = None
    unique_goals = list(dict.fromkeys(goals))
    for number, goal in enumerate(unique_goals):
        report("optimizing", len(inputs), 70.0 + 30.0 * number / len(unique_goals))
        if goal == "improve_calibration":
            suggestions.append(_calibration(version, expected, outputs, raw))
        elif goal == "maximize_coverage":
            suggestions.append(_coverage(version, expected, outputs, probabilities))
        elif goal == "maximize_accuracy":
            suggestions.append(
                _accuracy_search(version, training_data, inputs, expected, evaluation.accuracy)
            )
        elif goal == "balance_outputs":
            suggestions.append(_balance(version, training_data, inputs, expected, evaluation))
        elif goal == "maximize_oos_recall":
            suggestions.append(_out_of_scope_recall(version, rows, settings.in_scope_retention))
        else:
            variants = variants or _variants(data_dir, version, inputs, expected)
            suggestions.append(_compaction(version, goal, variants))
    return Report(
        version=version,
        evaluation=evaluation,
        latency=latency,
        batch_latency=batch,
        training_curve_summary=optimize.training_curve_summary(version.metrics, configured),
        suggestions=suggestions,
        out_of_scope=out_of_scope,
    )


def retrained(
    data_dir: Path,
    version: AgentVersion,
    data: list[Example],
    change: dict[str, Any],
    progress: ProgressCallback | None = None,
) -> AgentVersion:
    """Retrain with the suggested settings or extra data (deterministic: the measured model).

    Runs in a worker (JobManager.run_work); the new version's files are written there.
    """
    settings = _settings(version)
    if "balance" in change:
        extra = _paraphrases(data, change["balance"])
        data = [*data, *extra]
        what = f"retrained with {len(extra)} paraphrases of {', '.join(change['balance'])}"
    else:
        settings = dataclasses.replace(
            settings, epochs=int(change["epochs"]), learning_rate=change["learning_rate"]
        )
        what = f"retrained with epochs {settings.epochs}, learning_rate {settings.learning_rate:g}"
    artifact = search.train(version.training_type, data, settings)
    files = write_version_files(data_dir, version.agent_id, artifact)
    return derived_version(
        version,
        "optimization",
        f"applied: {what}",
        files,
        metrics=artifact.metrics,
        manifest={**version.manifest, "config": dataclasses.asdict(settings)},
    )


def _variants(
    data_dir: Path, version: AgentVersion, inputs: list[str], expected: list[str]
) -> tuple[compaction.Variant, list[compaction.Variant]] | None:
    """Measured smaller variants of a supervised version's model (None for other kinds)."""
    if version.training_type != "supervised":
        return None
    spec, tensors, _outputs = load_version_files(data_dir, version)
    return compaction.measure(spec, tensors, inputs, expected)


def _taught(examples: list[Example]) -> list[Example]:
    from agent_training_server.engines.supervised import taught

    return taught(examples)


def encode_suggestion(version_id: str, **change: float | bool | list[str]) -> str:
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
        elif "keep" in change:
            if not 0 < float(change["keep"]) <= 1 or not isinstance(change["int8"], bool):
                raise ValueError
        elif "balance" in change:
            outputs = change["balance"]
            if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
                raise ValueError
        elif "out_of_scope_threshold" in change:
            if not 0 <= float(change["out_of_scope_threshold"]) <= 1:
                raise ValueError
        elif "epochs" in change:
            if (
                not 1 <= int(change["epochs"]) <= 1000
                or not 0 < float(change["learning_rate"]) < 10
            ):
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


def check_out_of_scope_goal(examples: Sequence[Example], fallback: str, goals: list[str]) -> None:
    """maximize_oos_recall needs out-of-scope and in-scope evaluation examples.

    Raises:
        InvalidArgument: the evaluation set lacks either.
    """
    out_of_scope = sum(e.expected_output == fallback for e in examples)
    if out_of_scope and out_of_scope < len(examples):
        return
    field = f"optimization_goals[{goals.index('maximize_oos_recall')}]"
    missing = (
        f"no example whose expected output is the fallback output {fallback!r}"
        if not out_of_scope
        else "only out-of-scope examples, none of the outputs the agent answers"
    )
    raise InvalidArgument(
        f"OPTIMIZATION_GOAL_MAXIMIZE_OOS_RECALL needs out-of-scope and in-scope evaluation"
        f" examples; the evaluation set ({len(examples)} examples) has {missing}",
        hint=OUT_OF_SCOPE_HINT,
        violations=[FieldViolation(field, f"the evaluation set has {missing}")],
    )


def _out_of_scope_recall(
    version: AgentVersion, rows: metrics.OutOfScopeRows, retention: float
) -> Suggestion:
    """maximize_oos_recall: the lowest out-of-scope threshold keeping `retention` answered."""
    behavior = version.behavior
    current = behavior.out_of_scope_threshold
    now = metrics.out_of_scope(rows, behavior.confidence_threshold, current)
    if now is None:  # not reached: check_out_of_scope_goal refuses such a set before scoring
        raise InvalidArgument(
            "the evaluation set has no out-of-scope example", hint=OUT_OF_SCOPE_HINT
        )
    threshold = optimize.retention_threshold(rows, behavior.confidence_threshold, retention)
    suggested = (
        metrics.out_of_scope(rows, behavior.confidence_threshold, threshold)
        if threshold is not None
        else None
    )
    before, after = _out_of_scope_figures(now), _out_of_scope_figures(suggested or now)
    useful = threshold is not None and abs(threshold - current) > 1e-12
    if threshold is None:
        action = (
            f"no out-of-scope threshold keeps {retention:.1%} of the in-scope examples answered:"
            f" the confidence threshold {behavior.confidence_threshold:g} alone answers"
            f" {_answered_alone(rows, behavior.confidence_threshold):.1%} of them"
        )
    elif useful:
        action = f"set the out-of-scope threshold to {threshold:.4g} (now {current:g})"
    else:
        action = "keep the out-of-scope threshold: it is already the one the target gives"
    return Suggestion(
        suggestion_id=encode_suggestion(version.version_id, out_of_scope_threshold=threshold)
        if useful and threshold is not None
        else "",
        goal="maximize_oos_recall",
        action=action,
        rationale=f"{now.out_of_scope_count} out-of-scope and {now.in_scope_count} in-scope"
        f" evaluation examples; the out-of-scope score separates them with AUROC"
        f" {now.auroc:.3f}. At threshold {current:g} the fallback catches {now.recall:.1%} of"
        f" the out-of-scope ones and answers {now.in_scope_coverage:.1%} of the in-scope ones;"
        f" the lowest threshold answering at least {retention:.1%} of them is picked",
        before=before,
        after=after if useful else before,
        applicable=useful,
    )


def _out_of_scope_figures(measured: metrics.OutOfScope) -> dict[str, float]:
    return {
        "out_of_scope_threshold": measured.out_of_scope_threshold,
        "out_of_scope_recall": measured.recall,
        "out_of_scope_precision": measured.precision,
        "in_scope_accuracy": measured.in_scope_accuracy,
        "in_scope_coverage": measured.in_scope_coverage,
    }


def _answered_alone(rows: metrics.OutOfScopeRows, confidence_threshold: float) -> float:
    """Share of the in-scope rows answered with the out-of-scope threshold off."""
    in_scope = ~rows.out_of_scope
    return float((~rows.flagged(confidence_threshold, math.inf))[in_scope].mean())


def check_goals(goals: Sequence[str]) -> None:
    """Refuse an empty goal (the enum's zero value)."""
    if any(not goal for goal in goals):
        raise InvalidArgument(
            "optimization_goals holds OPTIMIZATION_GOAL_UNSPECIFIED",
            hint="Name goals such as OPTIMIZATION_GOAL_IMPROVE_CALIBRATION.",
        )


def _variant_words(change: dict[str, Any]) -> str:
    return compaction.Variant(float(change["keep"]), bool(change["int8"]), 0.0, 0.0, 0).name


def _compaction(
    version: AgentVersion,
    goal: str,
    measured: tuple[compaction.Variant, list[compaction.Variant]] | None,
) -> Suggestion:
    """minimize_size / minimize_latency from the measured variants."""
    if measured is None:
        return Suggestion(
            suggestion_id="",
            goal=goal,
            action="no candidate: compaction is measured for supervised (n-gram) versions",
            rationale=f"this version is {version.training_type}; its encoder is not compacted",
            before={},
            after={},
            applicable=False,
        )
    baseline, variants = measured
    fine = compaction.acceptable(baseline, variants)
    tried = "; ".join(
        f"{v.name}: accuracy {v.accuracy:.2%}, p50 {v.p50_ms:.3f} ms, {v.size_bytes:,} bytes"
        for v in variants
    )
    front = compaction.pareto([baseline, *variants])
    trade_offs = "; ".join(
        f"{v.name} ({v.accuracy:.2%}, {v.size_bytes:,} bytes, {v.p50_ms:.3f} ms)" for v in front
    )
    fields = ("accuracy", "p50_ms", "size_bytes")
    before = {name: float(getattr(baseline, name)) for name in fields}
    if goal == "minimize_size":
        best = min(fine, key=lambda v: v.size_bytes, default=None)
        useful = best is not None and best.size_bytes < baseline.size_bytes
        verdict = (
            f"{baseline.size_bytes / best.size_bytes:.1f}x smaller"
            if useful and best
            else "no candidate is smaller within half a point of accuracy"
        )
    else:
        best = min(fine, key=lambda v: v.p50_ms, default=None)
        speedup = baseline.p50_ms / best.p50_ms if best else 1.0
        useful = best is not None and speedup >= LATENCY_SPEEDUP
        verdict = (
            f"{speedup:.2f}x faster at batch 1"
            if useful
            else f"no candidate reached {LATENCY_SPEEDUP}x lower p50 latency within half a point"
            f" of accuracy (best {speedup:.2f}x): featurising the text takes"
            f" {baseline.featurise_p50_ms:.3f} of the {baseline.p50_ms:.3f} ms and the model"
            f" cut to one feature {baseline.floor_p50_ms:.3f} ms in all; a candidate changes"
            " only the weights, so none can be more than"
            f" {compaction.fastest_possible(baseline):.2f}x faster"
        )
    return Suggestion(
        suggestion_id=encode_suggestion(version.version_id, keep=best.keep, int8=best.int8)
        if useful and best
        else "",
        goal=goal,
        action=f"use {best.name} ({verdict})" if useful and best else verdict,
        rationale=f"as trained: accuracy {baseline.accuracy:.2%}, p50 {baseline.p50_ms:.3f} ms,"
        f" {baseline.size_bytes:,} bytes; measured candidates: {tried}. Pareto options"
        f" (accuracy, size, latency): {trade_offs}",
        before=before,
        after={name: float(getattr(best, name)) for name in fields} if useful and best else before,
        applicable=useful,
    )


def _settings(version: AgentVersion) -> TrainSettings:
    """The settings the version was trained with."""
    known = {field.name for field in dataclasses.fields(TrainSettings)}
    config = version.manifest.get("config", {})
    return TrainSettings(**{k: v for k, v in config.items() if k in known})


def _accuracy_search(
    version: AgentVersion,
    training_data: list[Example] | None,
    inputs: list[str],
    expected: list[str],
    accuracy: float,
) -> Suggestion:
    """maximize_accuracy: retrain around the current settings, pick by validation accuracy."""
    if training_data is None:
        return Suggestion(
            suggestion_id="",
            goal="maximize_accuracy",
            action="no candidate: the search retrains supervised versions only",
            rationale=f"this version is {version.training_type}",
            before={},
            after={},
            applicable=False,
        )
    settings = _settings(version)
    trials = search.run(version.training_type, training_data, settings, inputs, expected)
    current_validation = float(version.metrics.get("validation_accuracy", 0.0))
    current_loss = float(version.metrics.get("validation_loss", float("inf")))
    best = min(trials, key=lambda t: (t.validation_loss, t.epochs))
    useful = best.validation_loss < current_loss and best.evaluation_accuracy > accuracy
    tried = "; ".join(
        f"epochs {t.epochs}, learning rate {t.learning_rate:g}: validation loss"
        f" {t.validation_loss:.4f}, accuracy {t.validation_accuracy:.2%}, evaluation"
        f" {t.evaluation_accuracy:.2%}"
        for t in trials
    )
    before = {
        "accuracy": accuracy,
        "validation_loss": current_loss,
        "validation_accuracy": current_validation,
        "epochs": float(settings.epochs),
        "learning_rate": settings.learning_rate,
    }
    after = {
        "accuracy": best.evaluation_accuracy,
        "validation_loss": best.validation_loss,
        "validation_accuracy": best.validation_accuracy,
        "epochs": float(best.epochs),
        "learning_rate": best.learning_rate,
    }
    return Suggestion(
        suggestion_id=encode_suggestion(
            version.version_id, epochs=best.epochs, learning_rate=best.learning_rate
        )
        if useful
        else "",
        goal="maximize_accuracy",
        action=f"retrain with epochs {best.epochs} and learning rate {best.learning_rate:g}"
        if useful
        else "keep the settings: no nearby setting did better on validation and evaluation",
        rationale=f"trained with epochs {settings.epochs}, learning rate"
        f" {settings.learning_rate:g} (validation loss {current_loss:.4f}); picked by"
        f" validation loss among: {tried}",
        before=before,
        after=after if useful else before,
        applicable=useful,
    )


def _paraphrases(data: list[Example], outputs: Sequence[str]) -> list[Example]:
    """BALANCE_VARIANTS paraphrases of each training example of `outputs` (seed 0)."""
    from agent_training_server.synthetic.plan import GenerationPlan, build
    from agent_training_server.synthetic.sources import SourceExample

    wanted = set(outputs)
    sources = tuple(
        SourceExample(e.input, e.expected_output) for e in data if e.expected_output in wanted
    )
    if not sources:
        return []
    plan = GenerationPlan(
        data_type="paraphrases", count=len(sources) * BALANCE_VARIANTS, source_examples=sources
    )
    return [
        Example(sample.input, sample.label)
        for chunk in build(plan).chunks(10_000)
        for sample in chunk
    ]


def _balance(
    version: AgentVersion,
    training_data: list[Example] | None,
    inputs: list[str],
    expected: list[str],
    evaluation: metrics.Evaluation,
) -> Suggestion:
    """balance_outputs: paraphrase the weakest outputs' training examples, retrain, measure."""
    weakest = sorted(
        (score for score in evaluation.per_output if score.support), key=lambda s: s.f1
    )[:WEAKEST_OUTPUTS]
    names = [score.output for score in weakest]
    if training_data is None or not names:
        return Suggestion(
            suggestion_id="",
            goal="balance_outputs",
            action="no candidate: balancing retrains supervised versions only",
            rationale=f"this version is {version.training_type}",
            before={},
            after={},
            applicable=False,
        )
    extra = _paraphrases(training_data, names)
    artifact = search.train(version.training_type, [*training_data, *extra], _settings(version))
    predictor = registry.load_predictor(
        {**artifact.spec, "outputs": artifact.outputs}, artifact.tensors
    )
    retrained = metrics.evaluate(
        inputs, expected, artifact.outputs, predictor.predict_proba(inputs)
    )
    f1_after = {score.output: score.f1 for score in retrained.per_output}
    mean_before = float(np.mean([score.f1 for score in weakest]))
    mean_after = float(np.mean([f1_after.get(name, 0.0) for name in names]))
    useful = mean_after > mean_before and retrained.accuracy >= evaluation.accuracy - 0.005
    before = {"weakest_mean_f1": mean_before, "accuracy": evaluation.accuracy}
    after = {"weakest_mean_f1": mean_after, "accuracy": retrained.accuracy}
    suggestion = Suggestion(
        suggestion_id=encode_suggestion(version.version_id, balance=names) if useful else "",
        goal="balance_outputs",
        action=f"add {len(extra)} paraphrases of the training examples of {', '.join(names)}"
        " and retrain"
        if useful
        else "keep the data: paraphrasing the weakest outputs did not lift them",
        rationale="weakest outputs on the evaluation set: "
        + ", ".join(
            f"{s.output} F1 {s.f1:.2f} -> {f1_after.get(s.output, 0.0):.2f}" for s in weakest
        )
        + f"; {BALANCE_VARIANTS} paraphrases per example, retrained and measured",
        before=before,
        after=after if useful else before,
        applicable=useful,
    )
    wanted = set(names)
    sources = tuple(
        (e.input, e.expected_output) for e in training_data if e.expected_output in wanted
    )
    return dataclasses.replace(suggestion, synthetic_sources=sources)
