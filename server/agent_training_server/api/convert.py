"""Conversions between contract messages and domain dataclasses (to_proto / from_proto)."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from agent_training.v1 import agents_pb2, training_pb2
from agent_training_server.domain import Agent, AgentVersion, BehaviorSettings

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
        training_type=TRAINING_TYPE_VALUES.get(version.training_type, 0),
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
        ),
        size_bytes=version.size_bytes,
        parameter_count=version.parameter_count,
        active=version.version_id == active_version_id,
        create_time=timestamp(version.create_time),
        description=version.description,
    )


def config_to_proto(config: dict) -> training_pb2.TrainingConfig:
    """Return a TrainingConfig from a resolved config dict (as stored in manifests and jobs)."""
    message = training_pb2.TrainingConfig()
    for name in ("epochs", "batch_size", "seed", "max_duration_seconds"):
        if name in config:
            setattr(message, name, int(config[name]))
    for name in ("learning_rate", "validation_split"):
        if name in config:
            setattr(message, name, float(config[name]))
    for name in ("encoder", "base_agent_id", "base_version_id"):
        if config.get(name):
            setattr(message, name, str(config[name]))
    if "early_stopping_patience" in config:
        message.early_stopping.patience = int(config["early_stopping_patience"])
    if "early_stopping_min_delta" in config:
        message.early_stopping.min_delta = float(config["early_stopping_min_delta"])
    return message
