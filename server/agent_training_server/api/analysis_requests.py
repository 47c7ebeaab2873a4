"""AnalyzeAndOptimize requests: validation and the report as the contract's messages."""

from __future__ import annotations

from agent_training.v1 import analysis_pb2, service_pb2, synthetic_pb2, training_pb2
from agent_training_server.api import convert
from agent_training_server.api.field_limits import MAX_GOALS
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.domain import AnalysisJob, AnalysisStatus
from agent_training_server.example_checks import check_example_fields
from agent_training_server.services.analysis import (
    BALANCE_VARIANTS,
    GoalSettings,
    Report,
    Suggestion,
)

_GOAL_NAMES = [
    name
    for name in analysis_pb2.OptimizationGoal.DESCRIPTOR.values_by_name
    if not name.endswith("UNSPECIFIED")
]


def check_analyze(
    request: service_pb2.AnalyzeAndOptimizeRequest, server: ServerConfig
) -> tuple[list[str], GoalSettings]:
    """Validate the request; return its goals and how they are measured.

    Goals come as short names ("improve_calibration"); the settings carry the request's
    target_in_scope_retention (maximize_oos_recall). The counts of goals and evaluation
    examples were checked before the handler (field_limits).
    """
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id)
    checker.resource_id("version_id", request.version_id, required=False)
    checker.request_id(request.request_id)
    checker.ranges(request, server)
    settings = (
        GoalSettings(in_scope_retention=request.target_in_scope_retention)
        if request.HasField("target_in_scope_retention")
        else GoalSettings()
    )
    goals: list[str] = []
    for index, goal in enumerate(request.optimization_goals[:MAX_GOALS]):
        try:
            name = analysis_pb2.OptimizationGoal.Name(goal)
        except ValueError:
            name = ""
        if not goal or not name:
            valid = ", ".join(_GOAL_NAMES)
            checker.add(f"optimization_goals[{index}]", f"unknown goal {goal}; one of {valid}")
        else:
            goals.append(name.removeprefix("OPTIMIZATION_GOAL_").lower())
    if request.evaluation_data and request.dataset_id:
        checker.add("dataset_id", "set evaluation_data or dataset_id, not both")
    checker.resource_id("dataset_id", request.dataset_id, required=False)
    check_example_fields(checker, "evaluation_data", request.evaluation_data, server)
    checker.raise_if_any()
    return goals, settings


def report_to_proto(report: Report) -> service_pb2.AnalyzeAndOptimizeResponse:
    """An analysis report as AnalyzeAndOptimize's response."""
    e = report.evaluation
    analysis = analysis_pb2.Analysis(
        example_count=e.example_count,
        accuracy=e.accuracy,
        macro_f1=e.macro_f1,
        weighted_f1=e.weighted_f1,
        per_output=[
            analysis_pb2.OutputMetrics(
                output=s.output,
                precision=s.precision,
                recall=s.recall,
                f1=s.f1,
                support=s.support,
            )
            for s in e.per_output
        ],
        confused_pairs=[
            analysis_pb2.ConfusedPair(
                expected_output=expected,
                predicted_output=predicted,
                count=count,
                example_inputs=inputs,
            )
            for expected, predicted, count, inputs in e.confused_pairs
        ],
        expected_calibration_error=e.expected_calibration_error,
        coverage=e.coverage,
        accuracy_when_answered=e.accuracy_when_answered,
        latency=_latency(report.latency),
        batch_latency=_latency(report.batch_latency),
        parameter_count=report.version.parameter_count,
        size_bytes=report.version.size_bytes,
        training_curve_summary=report.training_curve_summary,
        reliability=[
            analysis_pb2.ReliabilityBin(
                lower=b.lower,
                upper=b.upper,
                count=b.count,
                accuracy=b.accuracy,
                mean_confidence=b.mean_confidence,
            )
            for b in e.reliability
        ],
        unseen_outputs=e.unseen_outputs,
        confidence_threshold=e.confidence_threshold,
        log_loss=e.log_loss,
    )
    if report.out_of_scope is not None:
        o = report.out_of_scope
        analysis.out_of_scope.CopyFrom(
            analysis_pb2.OutOfScopeAnalysis(
                out_of_scope_count=o.out_of_scope_count,
                in_scope_count=o.in_scope_count,
                auroc=o.auroc,
                recall=o.recall,
                precision=o.precision,
                in_scope_accuracy=o.in_scope_accuracy,
                in_scope_coverage=o.in_scope_coverage,
                confidence_threshold=o.confidence_threshold,
                out_of_scope_threshold=o.out_of_scope_threshold,
            )
        )
    suggestions = [_suggestion(s) for s in report.suggestions]
    return service_pb2.AnalyzeAndOptimizeResponse(
        version_id=report.version.version_id, analysis=analysis, suggestions=suggestions
    )


def _latency(latency) -> analysis_pb2.LatencyReport:  # noqa: ANN001
    return analysis_pb2.LatencyReport(
        p50_ms=latency.p50_ms,
        p95_ms=latency.p95_ms,
        p99_ms=latency.p99_ms,
        batch_size=latency.batch_size,
        throughput_per_second=latency.throughput_per_second,
    )


def _suggestion(s: Suggestion) -> analysis_pb2.Suggestion:
    message = analysis_pb2.Suggestion(
        suggestion_id=s.suggestion_id,
        goal=analysis_pb2.OptimizationGoal.Value(f"OPTIMIZATION_GOAL_{s.goal.upper()}"),
        action=s.action,
        rationale=s.rationale,
        before=s.before,
        after=s.after,
        applicable=s.applicable,
    )
    if s.synthetic_sources:
        # A ready GenerateSyntheticTrainingData request: the paraphrases that were measured.
        message.synthetic_data_type = synthetic_pb2.SYNTHETIC_DATA_TYPE_PARAPHRASES
        message.synthetic_parameters.source_examples.extend(
            training_pb2.TrainingExample(input=text, expected_output=output)
            for text, output in s.synthetic_sources
        )
        message.synthetic_count = BALANCE_VARIANTS * len(s.synthetic_sources)
    return message


_ANALYSIS_STATUS = {
    AnalysisStatus.RUNNING: service_pb2.ANALYSIS_STATUS_RUNNING,
    AnalysisStatus.SUCCEEDED: service_pb2.ANALYSIS_STATUS_SUCCEEDED,
    AnalysisStatus.FAILED: service_pb2.ANALYSIS_STATUS_FAILED,
}


def analysis_job_to_proto(job: AnalysisJob) -> service_pb2.AnalysisJob:
    """The AnalysisJob message of a stored or running analysis job."""
    message = service_pb2.AnalysisJob(
        analysis_id=job.analysis_id,
        agent_id=job.agent_id,
        status=_ANALYSIS_STATUS[job.status],
        progress=service_pb2.AnalysisProgress(**job.progress) if job.progress else None,
        result=service_pb2.AnalyzeAndOptimizeResponse.FromString(job.result)
        if job.result
        else None,
        create_time=convert.timestamp(job.create_time),
        end_time=convert.timestamp(job.end_time),
        trace_id=job.trace_id,
    )
    if job.error:
        message.error.CopyFrom(convert.error_to_proto({**job.error, "trace_id": job.trace_id}))
    return message
