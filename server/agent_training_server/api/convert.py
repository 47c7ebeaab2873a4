"""Conversions between contract messages and domain dataclasses (to_proto / from_proto)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from agent_training.v1 import agents_pb2, errors_pb2, invocation_pb2, training_pb2
from agent_training_server.domain import (
    Agent,
    AgentVersion,
    BehaviorSettings,
    JobEvent,
    TrainingJob,
)
from agent_training_server.engines.base import Example, TrainSettings
from agent_training_server.engines.defaults import defaults_for
from agent_training_server.services.datasets import example_of
from agent_training_server.services.inference import Answer

TRAINING_TYPE_NAMES = {
    training_pb2.TRAINING_TYPE_UNSPECIFIED: "supervised",
    training_pb2.TRAINING_TYPE_SUPERVISED: "supervised",
    training_pb2.TRAINING_TYPE_REINFORCEMENT: "reinforcement",
    training_pb2.TRAINING_TYPE_FEW_SHOT: "few_shot",
    training_pb2.TRAINING_TYPE_TRANSFER: "transfer",
}
TRAINING_TYPE_VALUES = {name: value for value, name in TRAINING_TYPE_NAMES.items() if value}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp | None:
    """Return a Timestamp for epoch seconds, or None for 0 (unset)."""
    if not seconds:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def behavior_from_proto(message: agents_pb2.BehaviorSettings) -> BehaviorSettings:
    """Resolve behaviour settings: unset fields take the defaults."""
    default = BehaviorSettings()
    return BehaviorSettings(
        confidence_threshold=(
            message.confidence_threshold
            if message.HasField("confidence_threshold")
            else default.confidence_threshold
        ),
        fallback_output=message.fallback_output or default.fallback_output,
        exploration_rate=(
            message.exploration_rate
            if message.HasField("exploration_rate")
            else default.exploration_rate
        ),
        temperature=message.temperature if message.HasField("temperature") else default.temperature,
        num_alternatives=(
            message.num_alternatives
            if message.HasField("num_alternatives")
            else default.num_alternatives
        ),
        disabled_outputs=tuple(message.disabled_outputs),
        ambiguity_margin=(
            message.ambiguity_margin
            if message.HasField("ambiguity_margin")
            else default.ambiguity_margin
        ),
        out_of_scope_threshold=(
            message.out_of_scope_threshold
            if message.HasField("out_of_scope_threshold")
            else default.out_of_scope_threshold
        ),
    )


def behavior_to_proto(behavior: BehaviorSettings) -> agents_pb2.BehaviorSettings:
    """Return the message of resolved behaviour settings (every field set)."""
    return agents_pb2.BehaviorSettings(
        confidence_threshold=behavior.confidence_threshold,
        fallback_output=behavior.fallback_output,
        exploration_rate=behavior.exploration_rate,
        temperature=behavior.temperature,
        num_alternatives=behavior.num_alternatives,
        disabled_outputs=list(behavior.disabled_outputs),
        ambiguity_margin=behavior.ambiguity_margin,
        out_of_scope_threshold=behavior.out_of_scope_threshold,
    )


def agent_to_proto(agent: Agent) -> agents_pb2.Agent:
    """Return the contract message of an agent."""
    return agents_pb2.Agent(
        agent_id=agent.agent_id,
        display_name=agent.display_name,
        description=agent.description,
        labels=agent.labels,
        active_version_id=agent.active_version_id,
        version_count=agent.version_count,
        default_behavior=behavior_to_proto(agent.default_behavior),
        create_time=timestamp(agent.create_time),
        update_time=timestamp(agent.update_time),
    )


def metrics_to_proto(metrics: dict[str, float]) -> training_pb2.TrainingMetrics:
    """Return TrainingMetrics from a metrics dict, ignoring names the message lacks."""
    fields = training_pb2.TrainingMetrics.DESCRIPTOR.fields_by_name
    message = training_pb2.TrainingMetrics()
    for name, value in metrics.items():
        field = fields.get(name)
        if field is None:
            continue
        is_int = field.type == field.TYPE_INT32
        setattr(message, name, int(value) if is_int else float(value))
    return message


def encoder_to_proto(encoder: dict) -> agents_pb2.EncoderInfo:
    """Return EncoderInfo from an engine's encoder description."""
    parameters = {
        key: str(value) for key, value in encoder.items() if key not in ("name", "dimensions")
    }
    return agents_pb2.EncoderInfo(
        name=str(encoder.get("name", "")),
        dimensions=int(encoder.get("dimensions", 0)),
        parameters=parameters,
    )


def version_to_proto(version: AgentVersion, active_version_id: str) -> agents_pb2.AgentVersion:
    """Return the contract message of a version."""
    manifest = version.manifest
    return agents_pb2.AgentVersion(
        version_id=version.version_id,
        agent_id=version.agent_id,
        version_number=version.version_number,
        source=version.source,
        training_type=TRAINING_TYPE_VALUES.get(
            version.training_type, training_pb2.TRAINING_TYPE_UNSPECIFIED
        ),
        training_id=version.training_id,
        parent_version_id=version.parent_version_id,
        outputs=list(version.outputs),
        encoder=encoder_to_proto(version.encoder),
        behavior=behavior_to_proto(version.behavior),
        metrics=metrics_to_proto(version.metrics),
        manifest=agents_pb2.ReplayManifest(
            seed=int(manifest.get("seed", 0)),
            data_sha256=str(manifest.get("data_sha256", "")),
            package_version=str(manifest.get("package_version", "")),
            encoder=encoder_to_proto(manifest.get("encoder", {})),
            config=config_to_proto(manifest.get("config", {})),
            # Versions from before devices were recorded all trained on the CPU in float32.
            device=str(manifest.get("device", "cpu")),
            precision=str(manifest.get("precision", "float32")),
        ),
        size_bytes=version.size_bytes,
        parameter_count=version.parameter_count,
        active=version.version_id == active_version_id,
        create_time=timestamp(version.create_time),
        description=version.description,
        checkpoint_id=version.checkpoint_id,
    )


def config_to_proto(config: dict) -> training_pb2.TrainingConfig:
    """Return a TrainingConfig from a resolved config dict (as stored in manifests and jobs)."""
    message = training_pb2.TrainingConfig()
    for name in (
        "epochs",
        "batch_size",
        "seed",
        "max_duration_seconds",
        "freeze_encoder_epochs",
        "keep_checkpoints",
    ):
        if name in config:
            setattr(message, name, int(config[name]))
    if config.get("num_workers", 1) != 1:
        message.num_workers = int(config["num_workers"])
    for name in ("learning_rate", "validation_split"):
        if name in config:
            setattr(message, name, float(config[name]))
    for name in ("encoder", "base_agent_id", "base_version_id", "device"):
        if config.get(name):
            setattr(message, name, str(config[name]))
    if "early_stopping_patience" in config:
        message.early_stopping.patience = int(config["early_stopping_patience"])
    if "early_stopping_min_delta" in config:
        message.early_stopping.min_delta = float(config["early_stopping_min_delta"])
    return message


# Jobs ---------------------------------------------------------------------------------------


def settings_from_proto(
    config: training_pb2.TrainingConfig, training_type: str, default_max_seconds: int
) -> TrainSettings:
    """Resolve a request's config: unset fields take the paradigm's defaults."""
    defaults = defaults_for(training_type)
    stopping = config.early_stopping

    def pick(message: Any, name: str, default: Any) -> Any:
        return getattr(message, name) if message.HasField(name) else default

    return TrainSettings(
        epochs=pick(config, "epochs", defaults.epochs),
        learning_rate=pick(config, "learning_rate", defaults.learning_rate),
        batch_size=pick(config, "batch_size", defaults.batch_size),
        seed=pick(config, "seed", defaults.seed),
        validation_split=pick(config, "validation_split", defaults.validation_split),
        early_stopping_patience=pick(stopping, "patience", defaults.early_stopping_patience),
        early_stopping_min_delta=pick(stopping, "min_delta", defaults.early_stopping_min_delta),
        max_duration_seconds=float(pick(config, "max_duration_seconds", default_max_seconds)),
        freeze_encoder_epochs=pick(config, "freeze_encoder_epochs", defaults.freeze_encoder_epochs),
        base_agent_id=config.base_agent_id,
        base_version_id=config.base_version_id,
        num_workers=pick(config, "num_workers", 1),
        keep_checkpoints=pick(config, "keep_checkpoints", 1),
        device=config.device,  # empty: the server's setting (JobManager records which)
    )


def examples_from_proto(examples: Iterable[training_pb2.TrainingExample]) -> list[Example]:
    """Return engine examples (read as a stored dataset's are: one reading of the message)."""
    return [example_of(e) for e in examples]


def job_to_proto(job: TrainingJob) -> training_pb2.TrainingJob:
    """Return the contract message of a job."""
    message = training_pb2.TrainingJob(
        training_id=job.training_id,
        agent_id=job.agent_id,
        training_type=TRAINING_TYPE_VALUES.get(
            job.training_type, training_pb2.TRAINING_TYPE_UNSPECIFIED
        ),
        status=training_pb2.TrainingStatus.Value(f"TRAINING_STATUS_{job.status}"),
        phase=_phase_value(job.phase),
        config=config_to_proto(job.config),
        example_count=job.example_count,
        output_count=job.output_count,
        metrics=metrics_to_proto(job.metrics),
        version_id=job.version_id,
        percent_complete=job.percent_complete,
        last_sequence=job.last_sequence,
        create_time=timestamp(job.create_time),
        start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time),
        parent_version_id=job.parent_version_id,
        executor=job.executor,
        trace_id=job.trace_id,
        timeline=[
            training_pb2.StatusTransition(
                status=training_pb2.TrainingStatus.Value(f"TRAINING_STATUS_{entry['status']}"),
                time=timestamp(entry["time"]),
                reason=entry.get("reason", ""),
            )
            for entry in job.timeline
        ],
    )
    if job.error:
        message.error.CopyFrom(error_to_proto(job.error))
    return message


def error_to_proto(error: dict[str, Any]) -> errors_pb2.ErrorDetail:
    """Return the error object of a failed job (its trace_id is the job's request's)."""
    return errors_pb2.ErrorDetail(
        code=error.get("code", ""),
        message=error.get("message", ""),
        hint=error.get("hint", ""),
        retryable=bool(error.get("retryable", False)),
        trace_id=error.get("trace_id", ""),
    )


def _phase_value(phase: str) -> training_pb2.TrainingPhase.ValueType:
    if not phase:
        return training_pb2.TRAINING_PHASE_UNSPECIFIED
    return training_pb2.TrainingPhase.Value(f"TRAINING_PHASE_{phase.upper()}")


def event_to_proto(event: JobEvent) -> training_pb2.TrainingEvent:
    """Return the contract message of a stored event (its payload mirrors the message)."""
    message = training_pb2.TrainingEvent(
        training_id=event.training_id, sequence=event.sequence, time=timestamp(event.time)
    )
    payload = dict(event.payload)
    if event.kind == "finished":
        metrics = payload.pop("metrics", {})
        error = payload.pop("error", None)
        body = json_format.ParseDict(payload, training_pb2.TrainingFinished())
        body.metrics.CopyFrom(metrics_to_proto(metrics))
        if error:
            body.error.CopyFrom(error_to_proto(error))
        message.finished.CopyFrom(body)
    else:
        body_type = {
            "accepted": training_pb2.TrainingAccepted,
            "progress": training_pb2.TrainingProgress,
        }[event.kind]
        getattr(message, event.kind).CopyFrom(json_format.ParseDict(payload, body_type()))
    return message


def answer_to_proto(answer: Answer) -> invocation_pb2.Prediction:
    """Return the contract message of an answer."""
    return invocation_pb2.Prediction(
        invocation_id=answer.invocation_id,
        input=answer.input,
        output=answer.output,
        confidence=answer.confidence,
        is_fallback=answer.is_fallback,
        alternatives=[
            invocation_pb2.Alternative(output=output, confidence=confidence)
            for output, confidence in answer.alternatives
        ],
        propensity=answer.propensity,
        explored=answer.explored,
        is_ambiguous=bool(answer.ambiguous_outputs),
        ambiguous_outputs=[
            invocation_pb2.Alternative(output=output, confidence=confidence)
            for output, confidence in answer.ambiguous_outputs
        ],
        out_of_scope_score=answer.out_of_scope_score,
    )
