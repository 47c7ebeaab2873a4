"""Server configuration: one frozen dataclass, read from flags and environment in one place.

Every field can be set by a flag (``--max-queued-jobs 8``) or an environment variable
(``AGENT_TRAINING_MAX_QUEUED_JOBS=8``); a flag wins over the environment, which wins over the
default. docs/configuration.md lists them all (generated from the same field help).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent_training_server import devices

ENV_PREFIX = "AGENT_TRAINING_"


def _default_workers() -> int:
    # One training process per two cores leaves room for the RPC server and the OS.
    return max(1, (os.cpu_count() or 1) // 2)


def _setting(default: Any, help: str, **kwargs: Any) -> Any:
    if callable(default):
        return dataclasses.field(default_factory=default, metadata={"help": help, **kwargs})
    return dataclasses.field(default=default, metadata={"help": help, **kwargs})


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Everything the server can be configured with."""

    address: str = _setting("127.0.0.1:50051", "host:port to listen on; port 0 picks a free one")
    reuse_port: bool = _setting(
        False,
        "share address's port with other processes (SO_REUSEPORT); off: a port in use stops the"
        " start",
    )
    # Path is immutable, so one shared default instance is safe.
    data_dir: Path = _setting(Path("data"), "folder of the database and weights")  # noqa: RUF009
    artifact_dir: str = _setting(
        "",
        "folder of weights, checkpoints and job folders, shared by replicas (docs/deployment.md);"
        " empty: data_dir",
    )
    database_url: str = _setting(
        "",
        "postgresql://user@host:port/name: the store in PostgreSQL (docs/deployment.md); empty:"
        " SQLite in data_dir",
    )
    replica_lease_seconds: float = _setting(
        10.0,
        "with database_url: a replica that has not renewed its lease for this long is taken for"
        " dead, and another replica resumes its jobs (docs/deployment.md)",
    )
    replica_read_seconds: float = _setting(
        1.0,
        "with database_url: most time InvokeAgent keeps serving a version after another replica"
        " activated a new one (its cached read of the agent)",
    )
    invoke_batch_inputs: int = _setting(
        64,
        "most inputs InvokeAgent scores in one pass: concurrent calls for the same version are"
        " scored together up to it (a call with more is scored alone)",
    )
    invoke_batch_wait_ms: float = _setting(
        0.0,
        "most milliseconds an InvokeAgent call waits for others to join its batch; 0: batches"
        " form only from the calls that arrive while the previous one is scored",
    )
    max_message_bytes: int = _setting(64 * 1024 * 1024, "largest request or response message")
    max_examples_per_request: int = _setting(200_000, "most training examples in one request")
    max_text_length: int = _setting(4_000, "most characters in one input or output text")
    max_outputs_per_agent: int = _setting(2_000, "most distinct outputs one agent can learn")
    max_batch_size: int = _setting(4_096, "most inputs in one InvokeAgent call")
    max_page_size: int = _setting(1_000, "largest page a list call returns")
    max_synthetic_count: int = _setting(10_000_000, "most examples one streamed generation makes")
    max_unary_synthetic_count: int = _setting(
        10_000, "most examples GenerateSyntheticExamples returns in one response"
    )
    max_dataset_examples: int = _setting(1_000_000, "most examples in one stored dataset")
    max_direct_analysis_examples: int = _setting(
        5_000, "largest evaluation set AnalyzeAndOptimize answers directly (more: the stream)"
    )
    max_concurrent_generations: int = _setting(
        4, "synthetic data generations running at once before more are refused"
    )
    max_analysis_jobs: int = _setting(
        2, "analysis jobs (AnalyzeAndOptimizeStream) running at once before more are refused"
    )
    # Limits and keepalive of calls (docs/limits.md).
    max_concurrent_streams: int = _setting(
        1_000, "streaming calls (server streams and uploads) open at once before more are refused"
    )
    max_streams_per_tenant: int = _setting(
        0,
        "streaming calls one tenant may have open at once when authentication is on (its share"
        " of max_concurrent_streams); 0: a quarter of max_concurrent_streams",
    )
    stream_idle_timeout_seconds: float = _setting(
        60.0,
        "time an upload (UploadDataset) may go without a message before it is ended with"
        " STREAM_IDLE, freeing its stream slot",
    )
    max_jobs_per_tenant: int = _setting(
        16, "queued or running training jobs one tenant may have before TrainAgent is refused"
    )
    max_context_turns: int = _setting(20, "most context turns in one input or training example")
    keepalive_time_seconds: float = _setting(
        30.0, "idle time after which the server pings a connection to check it is alive"
    )
    keepalive_timeout_seconds: float = _setting(
        10.0, "time a keepalive ping may go unanswered before the connection is closed"
    )
    min_client_ping_seconds: float = _setting(
        10.0, "shortest interval between client pings the server accepts (closer: GOAWAY)"
    )
    workers: int = _setting(_default_workers, "training worker processes (default: cores / 2)")
    max_queued_jobs: int = _setting(32, "jobs waiting for a worker before TrainAgent is refused")
    max_job_seconds: int = _setting(3_600, "default wall-clock limit of one training job")
    torch_threads: int = _setting(0, "threads per training worker; 0 means cores / workers")
    device: str = _setting(
        "auto",
        "where models train and encoder agents answer: auto (a CUDA GPU when torch sees one, else"
        " the CPU), cpu, cuda or cuda:N; a job's config.device overrides it for that job"
        " (docs/architecture.md#devices-and-precision)",
    )
    worker_niceness: int = _setting(
        10, "added to training workers' scheduling niceness (0-19): RPCs get a busy core first"
    )
    shutdown_grace_seconds: float = _setting(10.0, "time given to running calls on shutdown")
    log_level: str = _setting("INFO", "logging level: DEBUG, INFO, WARNING or ERROR")
    log_format: str = _setting("json", "log lines as json (with trace_id and span_id) or text")
    metrics_address: str = _setting(
        "127.0.0.1:9464", "host:port of the Prometheus /metrics endpoint; empty turns it off"
    )
    executor: str = _setting(
        "local", "where training jobs run: local worker processes, or ray (docs/ray.md)"
    )
    ray_address: str = _setting(
        "", "ray executor: auto, ray://host:port, or empty to start a Ray instance in-process"
    )
    ray_storage_path: str = _setting(
        "", "ray executor: Ray Train checkpoints, a shared path or URI (default data_dir/ray)"
    )
    ray_max_failures: int = _setting(
        1, "ray executor: restarts of a data-parallel job's workers from its last checkpoint"
    )
    # Durability (docs/durability.md).
    interrupted_jobs: str = _setting(
        "resume",
        "jobs a crash or shutdown left QUEUED or RUNNING, at the next start: resume (from their"
        " last checkpoint) or fail (FAILED with JOB_INTERRUPTED, retryable)",
    )
    checkpoint_every_steps: int = _setting(
        500, "also checkpoint inside long epochs every this many optimizer steps; 0: epoch ends"
    )
    shutdown_checkpoint_seconds: float = _setting(
        30.0, "time running jobs get on shutdown to checkpoint where they are before workers stop"
    )

    # Transport security and authentication (docs/security.md). -----------------------------
    tls_cert_file: str = _setting("", "PEM certificate chain of the server; with tls_key_file, TLS")
    tls_key_file: str = _setting("", "PEM private key of tls_cert_file")
    tls_client_ca_file: str = _setting(
        "", "PEM CA bundle: clients must present a certificate it signed (mutual TLS)"
    )
    auth_token_file: str = _setting(
        "", "JSON file of bearer tokens with their tenant and scopes; turns authentication on"
    )
    auth_jwt_issuer: str = _setting(
        "", "issuer (iss) whose JWTs are accepted as bearer tokens; turns authentication on"
    )
    auth_jwt_audience: str = _setting("", "audience (aud) the JWTs must name; empty: not checked")
    auth_jwt_key_file: str = _setting("", "PEM public key (HS*: shared secret) of the JWT issuer")
    auth_jwt_jwks_file: str = _setting("", "JSON Web Key Set file of the JWT issuer")
    auth_jwt_algorithms: str = _setting("RS256,ES256", "JWT signature algorithms accepted")
    auth_jwt_tenant_claim: str = _setting("tenant", "JWT claim that names the caller's tenant")
    auth_open_services: str = _setting(
        "health,reflection", "services callable without a token when authentication is on"
    )

    @property
    def artifact_root(self) -> Path:
        """Folder of version weights, job checkpoints and job folders: artifact_dir or data_dir.

        Versions record their folder relative to it, so a replica that mounts the same folder
        at another path loads the same files.
        """
        return Path(self.artifact_dir) if self.artifact_dir else self.data_dir

    @property
    def database_path(self) -> Path:
        """Path of the SQLite database file."""
        return self.data_dir / "agent_training.sqlite3"

    def replace(self, **changes: Any) -> ServerConfig:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_argument_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add one flag per ServerConfig field to ``parser`` (or a new parser) and return it."""
    parser = parser or argparse.ArgumentParser(description="Run the Agent Training Service.")
    for field in dataclasses.fields(ServerConfig):
        env = ENV_PREFIX + field.name.upper()
        parser.add_argument(
            _flag(field.name),
            dest=field.name,
            default=None,
            help=f"{field.metadata['help']} (env {env})",
        )
    return parser


def load_config(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    parsed: argparse.Namespace | None = None,
) -> ServerConfig:
    """Build the configuration from flags, then environment, then defaults.

    Raises:
        ValueError: a value has the wrong type or is out of range, with the setting's name.
    """
    environ = os.environ if environ is None else environ
    if parsed is None:
        parsed = build_argument_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(ServerConfig):
        raw = getattr(parsed, field.name, None)
        if raw is None:
            raw = environ.get(ENV_PREFIX + field.name.upper())
        if raw is None:
            continue
        values[field.name] = _convert(field, raw)
    config = ServerConfig(**values)
    _check(config)
    return config


def _convert(field: dataclasses.Field[Any], raw: str) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "bool":
            return _boolean(raw)
    except ValueError as error:
        raise ValueError(f"{field.name}: {raw!r} is not a valid {kind}") from error
    return raw


def _boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def setting_name(name: str) -> str:
    """How an operator changes a setting: ``--address (AGENT_TRAINING_ADDRESS)``."""
    return f"{_flag(name)} ({ENV_PREFIX}{name.upper()})"


def _check(config: ServerConfig) -> None:
    positive = (
        "max_message_bytes",
        "max_examples_per_request",
        "max_text_length",
        "max_outputs_per_agent",
        "max_batch_size",
        "max_page_size",
        "max_synthetic_count",
        "max_unary_synthetic_count",
        "max_dataset_examples",
        "max_concurrent_generations",
        "max_direct_analysis_examples",
        "max_analysis_jobs",
        "max_concurrent_streams",
        "stream_idle_timeout_seconds",
        "max_jobs_per_tenant",
        "max_context_turns",
        "keepalive_time_seconds",
        "keepalive_timeout_seconds",
        "min_client_ping_seconds",
        "workers",
        "max_job_seconds",
    )
    for name in positive:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    if config.max_queued_jobs < 0 or config.torch_threads < 0:
        raise ValueError("max_queued_jobs and torch_threads must not be negative")
    if not 0 <= config.worker_niceness <= 19:
        raise ValueError(f"worker_niceness must be in [0, 19], got {config.worker_niceness}")
    if config.max_streams_per_tenant < 0:
        raise ValueError(
            "max_streams_per_tenant must not be negative (0: a quarter of the server's)"
        )
    if config.log_format not in ("json", "text"):
        raise ValueError(f"log_format must be json or text, got {config.log_format!r}")
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
    if config.tls_client_ca_file and not config.tls_cert_file:
        raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
    if config.auth_jwt_issuer and not (config.auth_jwt_key_file or config.auth_jwt_jwks_file):
        raise ValueError("auth_jwt_issuer needs auth_jwt_key_file or auth_jwt_jwks_file")
    if config.database_url and not config.database_url.startswith(("postgresql://", "postgres://")):
        raise ValueError("database_url must be a postgresql:// URL, or empty for SQLite")
    if not 1.0 <= config.replica_lease_seconds <= 600.0:
        raise ValueError("replica_lease_seconds must be between 1 and 600")
    if not 0.0 <= config.replica_read_seconds <= 60.0:
        raise ValueError("replica_read_seconds must be between 0 and 60")
    if not 1 <= config.invoke_batch_inputs <= 4096:
        raise ValueError("invoke_batch_inputs must be between 1 and 4096")
    if not 0.0 <= config.invoke_batch_wait_ms <= 100.0:
        raise ValueError("invoke_batch_wait_ms must be between 0 and 100")
    if config.executor not in ("local", "ray"):
        raise ValueError(f"executor must be local or ray, got {config.executor!r}")
    if config.ray_max_failures < 0:
        raise ValueError("ray_max_failures must not be negative")
    if config.interrupted_jobs not in ("resume", "fail"):
        raise ValueError(
            f"interrupted_jobs must be resume or fail, got {config.interrupted_jobs!r}"
        )
    if config.checkpoint_every_steps < 0 or config.shutdown_checkpoint_seconds < 0:
        raise ValueError("checkpoint_every_steps and shutdown_checkpoint_seconds must be >= 0")
    try:
        devices.parse(config.device)
    except ValueError as error:
        raise ValueError(f"device: {error}") from None
    if ":" not in config.address:
        raise ValueError(f"address must be host:port, got {config.address!r}")


def describe_settings() -> list[tuple[str, str, str, str]]:
    """Return (flag, environment variable, default, help) for every setting, for the docs."""
    rows = []
    for field in dataclasses.fields(ServerConfig):
        default = field.default_factory() if callable(field.default_factory) else field.default
        rows.append(
            (
                _flag(field.name),
                ENV_PREFIX + field.name.upper(),
                str(default),
                field.metadata["help"],
            )
        )
    return rows
