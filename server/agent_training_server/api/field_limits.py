"""The limit of every field a request can carry: one table, walked generically.

Every string, bytes, repeated and map field of every request message (the input types of the
service's methods and the messages nested in them) has a `Size` here, and every number a `Range`
(or, where its valid values depend on another field, a `CheckedBy` naming who checks it).
`tests/test_field_limits.py` reads the descriptors and fails when a field has no entry, so a new
field cannot arrive without a limit. docs/limits.md lists the table.

`limit_checks` walks a request message against it (sizes before the handler runs, ranges in
the request's validator).

Bounds are fixed numbers, or a `Setting` of the server's configuration (`max_text_length`...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from agent_training_server.config import ServerConfig
from agent_training_server.synthetic.grammar import MAX_GRAMMAR_CHARS

PACKAGE = "agent_training.v1"


@dataclasses.dataclass(frozen=True)
class Setting:
    """A bound read from the server's configuration: `scale` times the setting, plus `plus`."""

    name: str
    scale: int = 1
    plus: int = 0

    def value(self, config: ServerConfig) -> int:
        """The bound under this configuration."""
        return getattr(config, self.name) * self.scale + self.plus

    def __str__(self) -> str:
        text = f"`{self.name}`" if self.scale == 1 else f"{self.scale} x `{self.name}`"
        return f"{text} + {self.plus}" if self.plus else text


Bound = int | float | Setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class Size:
    """How big a string, bytes, repeated or map field may be."""

    items: Bound | None = None
    """Most items of a repeated field or entries of a map."""
    chars: Bound | None = None
    """Most characters of a string (of each item of a repeated string); bytes of a bytes field."""
    total_chars: Bound | None = None
    """Most characters of all items of a repeated string together."""
    note: str = ""
    """The rule beyond the size, shown with a violation."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Range:
    """The values a number may take: finite and in [low, high] (or (low, high])."""

    low: Bound
    high: Bound
    low_open: bool = False
    note: str = ""
    """Said with a violation: what the value means or where larger values go."""


@dataclasses.dataclass(frozen=True)
class CheckedBy:
    """A number whose valid values depend on another field; `where` says who checks it."""

    where: str


Limit = Size | Range | CheckedBy

# Fixed limits: the numbers every other module takes from here. --------------------------------

ID_CHARS = 64
"""Ids: 1 to 64 characters of [A-Za-z0-9_.-] (the pattern is checked by the validators)."""
MAX_REQUEST_ID = 128
MAX_ASSIGNMENT_KEY = 128
"""A rollout's sticky assignment key: a conversation or customer id."""
MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 2_000
MAX_LABELS = 32
MAX_LABEL_TEXT = 64
MAX_MAP_ENTRIES = 64
"""Most entries of the metric maps (performance_metrics, targets)."""
MAX_METRIC_NAME = 64
MAX_GOALS = 16
"""Most optimization_goals in one request (there are fewer goals; repeats are merged)."""
MAX_EVALUATION_EXAMPLES = 200_000
"""Most inline evaluation examples in one request (a dataset_id may hold more)."""
MAX_TOPICS = 64
MAX_TOPIC_NAME = 64
MAX_GRAMMAR = MAX_GRAMMAR_CHARS
"""Most characters of a template grammar (the grammar parser's own limit)."""
MAX_DATASET_NAME = 128
MAX_FEEDBACK = 64
"""A feedback is "correct", "incorrect" or a number written as text."""
MAX_ENCODER_NAME = 64
MAX_DEVICE_NAME = 16
"""Longest device name: cuda:999 is 8 characters."""
MAX_BEHAVIOR_FALLBACK = 200
MAX_PAGE_TOKEN = 1_024
"""Page tokens are opaque and short (the position of the last item)."""
MAX_KEPT_CHECKPOINTS = 100
"""TrainingConfig.keep_checkpoints: each one kept is a copy of the model's weights on disk."""
MAX_DISABLED_OUTPUT_CHARS = 8_000
"""Characters of all of an agent's disabled outputs together: keeps the largest ListAgents page
within the message limit (docs/limits.md has the computation)."""
SUGGESTION_ID_CHARS = Setting("max_text_length", scale=80, plus=1_000)
"""A suggestion id encodes its change: at most 5 outputs, each escaped to at most 12 characters
of JSON per character and then base64 encoded (4/3), plus the version id and numbers."""
MAX_CHUNK_SIZE = 10_000
DEFAULT_CHUNK_SIZE = 1_000
MAX_VARIANTS_PER_EXAMPLE = 1_000
MAX_CONTEXT_TURNS_GENERATED = 6
MAX_NUM_WORKERS = 64
MAX_EXAMPLES_PAGE = 10_000
"""Largest page of ListDatasetExamples."""
MAX_EPOCHS = 1_000
MAX_BATCH_SIZE = 4_096
MAX_ALTERNATIVES = 20
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

TEXT = Setting("max_text_length")
ID = Size(chars=ID_CHARS, note="ids are 1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '-'")
REQUEST_ID = Size(chars=MAX_REQUEST_ID)
PAGE_SIZE = Range(low=0, high=Setting("max_page_size"), note="0 means 50")
PAGE_TOKEN = Size(chars=MAX_PAGE_TOKEN)
EXAMPLES = Size(items=Setting("max_examples_per_request"))
SHARE = Range(low=0, high=1)
PROBABILITY = Range(low=0, high=1, low_open=True)
TEMPERATURE = Range(low=0.05, high=20.0)
"""Scores are raised to 1 / temperature: at 0.05 the smallest (1e-12) becomes 1e-240, still a
normal float64, so no answer's scores all vanish to zero; 20 already makes the confidences of
every output nearly equal. Calibration fits temperatures from 0.2 to 5."""
SEED = Range(low=0, high=INT64_MAX, note="numpy and torch take non-negative seeds")

_LIMITS: dict[str, Limit] = {
    # TrainAgent
    "TrainAgentRequest.agent_id": ID,
    "TrainAgentRequest.training_data": EXAMPLES,
    "TrainAgentRequest.request_id": REQUEST_ID,
    "TrainAgentRequest.dataset_id": ID,
    "TrainingExample.input": Size(chars=TEXT),
    "TrainingExample.expected_output": Size(chars=TEXT),
    "TrainingExample.feedback": Size(chars=MAX_FEEDBACK),
    "TrainingExample.context": Size(items=Setting("max_context_turns"), chars=TEXT),
    "TrainingExample.propensity": PROBABILITY,
    "TrainingConfig.epochs": Range(low=1, high=MAX_EPOCHS),
    "TrainingConfig.learning_rate": Range(low=1e-7, high=10.0),
    "TrainingConfig.batch_size": Range(low=1, high=MAX_BATCH_SIZE),
    "TrainingConfig.seed": SEED,
    "TrainingConfig.validation_split": Range(low=0, high=0.5),
    "TrainingConfig.encoder": Size(chars=MAX_ENCODER_NAME),
    "TrainingConfig.base_agent_id": ID,
    "TrainingConfig.base_version_id": ID,
    "TrainingConfig.max_duration_seconds": Range(
        low=1, high=Setting("max_job_seconds"), note="the server's max_job_seconds"
    ),
    "TrainingConfig.freeze_encoder_epochs": Range(
        low=0, high=MAX_EPOCHS, note="and at most epochs"
    ),
    "TrainingConfig.num_workers": Range(low=1, high=MAX_NUM_WORKERS),
    "TrainingConfig.device": Size(chars=MAX_DEVICE_NAME),
    "TrainingConfig.keep_checkpoints": Range(low=0, high=MAX_KEPT_CHECKPOINTS),
    "EarlyStopping.patience": Range(low=0, high=MAX_EPOCHS, note="0 turns early stopping off"),
    "EarlyStopping.min_delta": Range(low=0, high=10.0),
    # Synthetic data
    "GenerateSyntheticTrainingDataRequest.count": Range(
        low=1, high=Setting("max_synthetic_count"), note="required"
    ),
    "GenerateSyntheticTrainingDataRequest.request_id": REQUEST_ID,
    "GenerateSyntheticTrainingDataRequest.save_as": Size(chars=MAX_DATASET_NAME),
    "GenerateSyntheticTrainingDataRequest.chunk_size": Range(
        low=0, high=MAX_CHUNK_SIZE, note=f"0 means {DEFAULT_CHUNK_SIZE}"
    ),
    "GenerateSyntheticExamplesRequest.count": Range(
        low=1,
        high=Setting("max_unary_synthetic_count"),
        note="GenerateSyntheticTrainingData streams larger counts",
    ),
    "GenerateSyntheticExamplesRequest.request_id": REQUEST_ID,
    "GenerateSyntheticExamplesRequest.save_as": Size(chars=MAX_DATASET_NAME),
    "SyntheticDataParameters.topics": Size(items=MAX_TOPICS, chars=MAX_TOPIC_NAME),
    "SyntheticDataParameters.seed": Range(
        low=INT64_MIN, high=INT64_MAX, note="any int64: it seeds Python's random"
    ),
    "SyntheticDataParameters.source_examples": EXAMPLES,
    "SyntheticDataParameters.agent_id": ID,
    "SyntheticDataParameters.dataset_id": ID,
    "SyntheticDataParameters.target_agent_id": ID,
    "SyntheticDataParameters.min_confidence": PROBABILITY,
    "SyntheticDataParameters.grammar": Size(chars=MAX_GRAMMAR),
    "SyntheticDataParameters.fallback_output": Size(chars=TEXT),
    "SyntheticDataParameters.context_turns": Range(low=1, high=MAX_CONTEXT_TURNS_GENERATED),
    "SyntheticDataParameters.variants_per_example": Range(
        low=0, high=MAX_VARIANTS_PER_EXAMPLE, note="0 spreads count over the sources"
    ),
    "SyntheticDataParameters.exploration_rate": SHARE,
    # AnalyzeAndOptimize
    "AnalyzeAndOptimizeRequest.agent_id": ID,
    "AnalyzeAndOptimizeRequest.optimization_goals": Size(items=MAX_GOALS),
    "AnalyzeAndOptimizeRequest.version_id": ID,
    "AnalyzeAndOptimizeRequest.evaluation_data": Size(items=MAX_EVALUATION_EXAMPLES),
    "AnalyzeAndOptimizeRequest.apply_suggestion_id": Size(chars=SUGGESTION_ID_CHARS),
    "AnalyzeAndOptimizeRequest.request_id": REQUEST_ID,
    "AnalyzeAndOptimizeRequest.dataset_id": ID,
    "AnalyzeAndOptimizeRequest.target_in_scope_retention": Range(
        low=0.5, high=1, note="the share of in-scope examples to keep answered; unset means 0.95"
    ),
    "GetAnalysisJobRequest.analysis_id": ID,
    "WatchAnalysisJobRequest.analysis_id": ID,
    # AdaptAgentBehavior
    "AdaptAgentBehaviorRequest.agent_id": ID,
    "AdaptAgentBehaviorRequest.performance_metrics": Size(items=MAX_MAP_ENTRIES),
    "AdaptAgentBehaviorRequest.PerformanceMetricsEntry.key": Size(chars=MAX_METRIC_NAME),
    "AdaptAgentBehaviorRequest.PerformanceMetricsEntry.value": CheckedBy(
        "the adaptation, by the metric's name: rates (success_rate, user_satisfaction,"
        " escalation_rate...) in [0, 1], latency_p95_ms 0 or more; other names are ignored"
    ),
    "AdaptAgentBehaviorRequest.targets": Size(items=MAX_MAP_ENTRIES),
    "AdaptAgentBehaviorRequest.TargetsEntry.key": Size(chars=MAX_METRIC_NAME),
    "AdaptAgentBehaviorRequest.TargetsEntry.value": SHARE,
    "AdaptAgentBehaviorRequest.request_id": REQUEST_ID,
    # Agents
    "CreateAgentRequest.agent_id": ID,
    "CreateAgentRequest.display_name": Size(chars=MAX_DISPLAY_NAME),
    "CreateAgentRequest.description": Size(chars=MAX_DESCRIPTION),
    "CreateAgentRequest.labels": Size(items=MAX_LABELS),
    "CreateAgentRequest.LabelsEntry.key": Size(chars=MAX_LABEL_TEXT),
    "CreateAgentRequest.LabelsEntry.value": Size(chars=MAX_LABEL_TEXT),
    "CreateAgentRequest.request_id": REQUEST_ID,
    "BehaviorSettings.confidence_threshold": SHARE,
    "BehaviorSettings.fallback_output": Size(chars=MAX_BEHAVIOR_FALLBACK),
    "BehaviorSettings.exploration_rate": SHARE,
    "BehaviorSettings.temperature": TEMPERATURE,
    "BehaviorSettings.num_alternatives": Range(low=0, high=MAX_ALTERNATIVES),
    "BehaviorSettings.ambiguity_margin": SHARE,
    "BehaviorSettings.out_of_scope_threshold": SHARE,
    "BehaviorSettings.disabled_outputs": Size(
        items=Setting("max_outputs_per_agent"),
        chars=TEXT,
        total_chars=MAX_DISABLED_OUTPUT_CHARS,
    ),
    "GetAgentRequest.agent_id": ID,
    "ListAgentsRequest.page_size": PAGE_SIZE,
    "ListAgentsRequest.page_token": PAGE_TOKEN,
    "DeleteAgentRequest.agent_id": ID,
    "ListAgentVersionsRequest.agent_id": ID,
    "ListAgentVersionsRequest.page_size": PAGE_SIZE,
    "ListAgentVersionsRequest.page_token": PAGE_TOKEN,
    "ActivateAgentVersionRequest.agent_id": ID,
    "ActivateAgentVersionRequest.version_id": ID,
    # Rollouts
    "StartRolloutRequest.agent_id": ID,
    "StartRolloutRequest.candidate_version_id": ID,
    "StartRolloutRequest.mode": CheckedBy("StartRollout's validator: canary or shadow"),
    "StartRolloutRequest.traffic_share": CheckedBy(
        "StartRollout's validator: in (0, 1) for a canary, unset for a shadow"
    ),
    "StartRolloutRequest.request_id": REQUEST_ID,
    "VersionRollout.mode": CheckedBy("the request's validator: canary or shadow"),
    "VersionRollout.traffic_share": CheckedBy(
        "the request's validator: in (0, 1) for a canary, unset for a shadow"
    ),
    "RolloutPolicy.confidence": Range(low=0.5, high=0.999),
    "RolloutPolicy.abort_margin": SHARE,
    "RolloutPolicy.min_feedback": Range(low=1, high=100_000),
    "GetRolloutRequest.agent_id": ID,
    "GetRolloutRequest.rollout_id": ID,
    "UpdateRolloutRequest.agent_id": ID,
    "UpdateRolloutRequest.mode": CheckedBy("UpdateRollout's validator: canary or shadow"),
    "UpdateRolloutRequest.traffic_share": CheckedBy(
        "UpdateRollout's validator: in (0, 1), for a canary"
    ),
    "PromoteRolloutRequest.agent_id": ID,
    "PromoteRolloutRequest.reason": Size(chars=MAX_DESCRIPTION),
    "AbortRolloutRequest.agent_id": ID,
    "AbortRolloutRequest.reason": Size(chars=MAX_DESCRIPTION),
    # Training jobs
    "GetTrainingJobRequest.training_id": ID,
    "ListTrainingJobsRequest.agent_id": ID,
    "ListTrainingJobsRequest.page_size": PAGE_SIZE,
    "ListTrainingJobsRequest.page_token": PAGE_TOKEN,
    "CancelTrainingJobRequest.training_id": ID,
    "WatchTrainingJobRequest.training_id": ID,
    "WatchTrainingJobRequest.from_sequence": Range(low=0, high=INT64_MAX),
    "PauseTrainingJobRequest.training_id": ID,
    "ResumeTrainingJobRequest.training_id": ID,
    "ListTrainingCheckpointsRequest.training_id": ID,
    "ListTrainingCheckpointsRequest.page_size": PAGE_SIZE,
    "ListTrainingCheckpointsRequest.page_token": PAGE_TOKEN,
    "CreateVersionFromCheckpointRequest.training_id": ID,
    "CreateVersionFromCheckpointRequest.checkpoint_id": ID,
    "CreateVersionFromCheckpointRequest.request_id": REQUEST_ID,
    # Export
    "ExportAgentVersionRequest.agent_id": ID,
    "ExportAgentVersionRequest.version_id": ID,
    # Using agents
    "InvokeAgentRequest.agent_id": ID,
    "InvokeAgentRequest.input": Size(chars=TEXT),
    "InvokeAgentRequest.inputs": Size(items=Setting("max_batch_size"), chars=TEXT),
    "InvokeAgentRequest.context": Size(items=Setting("max_context_turns"), chars=TEXT),
    "InvokeAgentRequest.version_id": ID,
    "InvokeAgentRequest.assignment_key": Size(chars=MAX_ASSIGNMENT_KEY),
    "RecordFeedbackRequest.agent_id": ID,
    "RecordFeedbackRequest.invocation_id": Size(chars=ID_CHARS),
    "RecordFeedbackRequest.feedback": Size(chars=MAX_FEEDBACK),
    "RecordFeedbackRequest.corrected_output": Size(chars=TEXT),
    "RecordFeedbackRequest.comment": Size(chars=MAX_DESCRIPTION),
    # Datasets
    "UploadDatasetRequest.name": Size(chars=MAX_DATASET_NAME),
    "UploadDatasetRequest.description": Size(chars=MAX_DESCRIPTION),
    "UploadDatasetRequest.examples": EXAMPLES,
    "UploadDatasetRequest.request_id": REQUEST_ID,
    "GetDatasetRequest.dataset_id": ID,
    "ListDatasetsRequest.page_size": PAGE_SIZE,
    "ListDatasetsRequest.page_token": PAGE_TOKEN,
    "ListDatasetExamplesRequest.dataset_id": ID,
    "ListDatasetExamplesRequest.page_size": Range(
        low=0, high=MAX_EXAMPLES_PAGE, note="0 means 1000"
    ),
    "ListDatasetExamplesRequest.page_token": PAGE_TOKEN,
    "DeleteDatasetRequest.dataset_id": ID,
}

FIELD_LIMITS: Mapping[str, Limit] = {f"{PACKAGE}.{name}": limit for name, limit in _LIMITS.items()}
"""Full field name (agent_training.v1.BehaviorSettings.disabled_outputs) -> its limit."""


def resolve(bound: Bound, config: ServerConfig) -> int | float:
    """A bound's value under a configuration."""
    return bound.value(config) if isinstance(bound, Setting) else bound


def describe_range(limit: Range, config: ServerConfig | None = None) -> str:
    """A range in interval notation, its bounds resolved under `config` (named without one)."""

    def shown(bound: Bound) -> str:
        if isinstance(bound, Setting):
            return format_number(bound.value(config)) if config is not None else str(bound)
        return format_number(bound)

    return f"{'(' if limit.low_open else '['}{shown(limit.low)}, {shown(limit.high)}]"


def format_number(value: float) -> str:
    """A bound or value as written in a message: integers whole, floats short."""
    if isinstance(value, int):
        return str(value)
    return f"{value:g}"
