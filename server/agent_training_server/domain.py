"""Domain types: plain dataclasses shared by the services, the store and the conversions.

Times are seconds since the epoch (float, UTC). Nothing here knows about gRPC or SQL.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

T = TypeVar("T")

DEFAULT_TENANT = "default"
"""The tenant of every caller when authentication is off, and of data stored before tenancy."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BehaviorSettings:
    """How an agent version answers, separate from its weights."""

    confidence_threshold: float = 0.0
    """Answers under this confidence return the fallback output."""
    fallback_output: str = "fallback"
    """What the agent answers when unsure."""
    exploration_rate: float = 0.0
    """Probability of offering a non-top output, to learn from feedback."""
    temperature: float = 1.0
    """Softmax temperature applied to the model's scores."""
    num_alternatives: int = 3
    """Runner-up outputs returned with each answer."""
    disabled_outputs: tuple[str, ...] = ()
    """Outputs never answered."""
    ambiguity_margin: float = 0.0
    """Answers whose best two confidences differ by at most this are marked ambiguous (0: off)."""
    out_of_scope_threshold: float = 1.0
    """Answers whose out-of-scope score is above this return the fallback output (1: off)."""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        data = dataclasses.asdict(self)
        data["disabled_outputs"] = list(self.disabled_outputs)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BehaviorSettings:
        """Build from ``to_json`` output, ignoring unknown keys written by newer versions."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        if "disabled_outputs" in values:
            values["disabled_outputs"] = tuple(values["disabled_outputs"])
        return cls(**values)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Agent:
    """An agent and the version it serves."""

    agent_id: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    default_behavior: BehaviorSettings = dataclasses.field(default_factory=BehaviorSettings)
    active_version_id: str = ""
    version_count: int = 0
    create_time: float = 0.0
    update_time: float = 0.0
    tenant: str = "default"
    """The tenant that owns the agent (and its versions, jobs, answers and feedback)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentVersion:
    """An immutable version of an agent."""

    version_id: str
    agent_id: str
    version_number: int
    source: str
    """"training", "adaptation", "optimization" or "checkpoint"."""
    training_type: str
    """"supervised", "reinforcement", "few_shot" or "transfer"."""
    training_id: str = ""
    parent_version_id: str = ""
    outputs: tuple[str, ...] = ()
    encoder: dict[str, Any] = dataclasses.field(default_factory=dict)
    behavior: BehaviorSettings = dataclasses.field(default_factory=BehaviorSettings)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Replay manifest: seed, data hash, resolved config, package version, encoder."""
    size_bytes: int = 0
    parameter_count: int = 0
    description: str = ""
    artifact_dir: str = ""
    """Folder of the weights, relative to the data folder."""
    create_time: float = 0.0

    @property
    def checkpoint_id(self) -> str:
        """The kept checkpoint of ``training_id`` it was made from ("" for a job's own version).

        Recorded in the manifest, with the rest of how the version was made.
        """
        return str(self.manifest.get("checkpoint_id", ""))


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing."""

    items: list[T]
    next_page_token: str


class JobStatus:
    """Job states (the contract's TrainingStatus without the prefix)."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    PAUSED = "PAUSED"
    """Checkpointed where it was, holding no worker, until resumed (not ended, not unfinished:
    no replica claims it, no queue or tenant limit counts it)."""
    ENDED = frozenset({SUCCEEDED, FAILED, CANCELLED})


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingJob:
    """A training job as stored."""

    training_id: str
    agent_id: str
    training_type: str
    status: str = JobStatus.QUEUED
    phase: str = ""
    """"loading_data", "training", "evaluating", "saving" while running; "" otherwise."""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The resolved configuration."""
    example_count: int = 0
    output_count: int = 0
    dataset_sha256: str = ""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    version_id: str = ""
    error: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The error object (code, message, hint, retryable) when FAILED or CANCELLED."""
    percent_complete: float = 0.0
    last_sequence: int = 0
    timeline: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Status transitions: {"status", "time", "reason"}, oldest first."""
    parent_version_id: str = ""
    executor: str = "local"
    create_time: float = 0.0
    start_time: float = 0.0
    end_time: float = 0.0
    trace_id: str = ""
    """Trace of the request that submitted the job; the worker's spans belong to it too."""
    trace_context: dict[str, str] = dataclasses.field(default_factory=dict)
    """That request's W3C trace context, kept so a job resumed after a restart stays in it."""


@dataclasses.dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event log; ``payload`` mirrors the contract's event message."""

    training_id: str
    sequence: int
    time: float
    kind: str
    """"accepted", "progress" or "finished"."""
    payload: dict[str, Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dataset:
    """A stored, named, immutable collection of examples."""

    dataset_id: str
    name: str
    description: str = ""
    source: str = "upload"
    """"upload" or "generated"."""
    recipe: bytes = b""
    """The serialised GenerationRecipe of a generated dataset."""
    example_count: int = 0
    output_count: int = 0
    content_sha256: str = ""
    create_time: float = 0.0
    tenant: str = "default"
    """The tenant that owns the dataset."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Invocation:
    """One answer InvokeAgent gave, as recorded for feedback."""

    invocation_id: str
    agent_id: str
    version_id: str
    input: str
    context: tuple[str, ...] = ()
    output: str
    confidence: float
    propensity: float
    """Probability with which the behaviour chose `output` (exploration included)."""
    explored: bool = False
    is_fallback: bool = False
    time: float = 0.0
    rollout_id: str = ""
    """The rollout running when it was answered (empty: none)."""
    arm: str = ""
    """In a rollout: ``active`` or ``candidate`` (returned to the caller), or ``shadow`` (the
    candidate's answer in shadow mode, recorded and not returned)."""
    shadow_of: str = ""
    """A shadow answer: the invocation_id of the active version's answer to the same input."""
    latency_ms: float = 0.0
    """Time to score the input (its batch's scoring time, per input), in milliseconds."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Feedback:
    """How an answer was received."""

    feedback_id: str
    invocation_id: str
    agent_id: str
    feedback: str
    """"correct", "incorrect" or a reward in [-1, 1] as text."""
    reward: float
    """The feedback as a number: +1 correct, -1 incorrect, else the reward."""
    corrected_output: str = ""
    comment: str = ""
    time: float = 0.0


class RolloutState:
    """Where a rollout stands."""

    RUNNING = "running"
    PROMOTED = "promoted"
    ABORTED = "aborted"


class RolloutMode:
    """How the candidate meets traffic."""

    CANARY = "canary"
    """It answers a share of the inputs."""
    SHADOW = "shadow"
    """It answers every input too, recorded and not returned."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutPolicy:
    """When a running rollout decides by itself (rollouts/decisions.py)."""

    confidence: float = 0.95
    """Promote once the candidate is better with this confidence; abort once it is worse by
    more than ``abort_margin`` with it."""
    abort_margin: float = 0.0
    min_feedback: int = 30
    """Answers with feedback each arm needs before any automatic decision."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutRequest:
    """A rollout to start with a version a job or an adaptation makes, instead of activating it."""

    mode: str
    traffic_share: float = 0.0
    policy: RolloutPolicy | None = None

    def to_json(self) -> dict[str, Any]:
        """As a job's configuration keeps it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutRequest:
        """From ``to_json``."""
        policy = data.get("policy")
        return cls(
            mode=data["mode"],
            traffic_share=float(data.get("traffic_share", 0.0)),
            policy=RolloutPolicy(**policy) if policy else None,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RolloutDecision:
    """A decision that ended a rollout."""

    action: str
    """``promote`` or ``abort``."""
    reason: str
    automatic: bool
    """Taken by the rollout's policy (else by a caller)."""
    evidence: dict[str, float] = dataclasses.field(default_factory=dict)
    time: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rollout:
    """A candidate version meeting live traffic before it may become the active one."""

    rollout_id: str
    agent_id: str
    candidate_version_id: str
    active_version_id: str
    """The agent's active version when the rollout started: the other arm."""
    mode: str = RolloutMode.CANARY
    traffic_share: float = 0.0
    """Canary: share of the inputs the candidate answers, in (0, 1)."""
    policy: RolloutPolicy | None = None
    state: str = RolloutState.RUNNING
    decisions: tuple[RolloutDecision, ...] = ()
    create_time: float = 0.0
    update_time: float = 0.0


class AnalysisStatus:
    """Status values of an analysis job."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclasses.dataclass(frozen=True)
class AnalysisJob:
    """An analysis of a large evaluation set, run in the background and kept with its result."""

    analysis_id: str
    agent_id: str
    status: str = AnalysisStatus.RUNNING
    progress: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Latest progress: phase, examples_done, examples_total, percent_complete."""
    result: bytes = b""
    """The serialised AnalyzeAndOptimizeResponse once SUCCEEDED (opaque to the store)."""
    error: dict[str, Any] = dataclasses.field(default_factory=dict)
    create_time: float = 0.0
    end_time: float = 0.0
    trace_id: str = ""
