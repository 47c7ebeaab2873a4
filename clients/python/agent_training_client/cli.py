# PYTHON_ARGCOMPLETE_OK (tab completion through argcomplete)
"""The ``agent-training`` command line: run the server, manage agents, train, watch, invoke."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from agent_training.v1 import training_pb2
from agent_training_client import cli_agents, cli_analysis, cli_data
from agent_training_client.cli_args import (
    Parser,
    add_command,
    describe_default,
    enum_names,
    enum_number,
    enum_value,
    output_format,
)
from agent_training_client.cli_examples import add_column_flags, reader
from agent_training_client.cli_hints import print_error
from agent_training_client.cli_output import (
    Column,
    enum_text,
    field,
    fixed,
    message_data,
    show,
    show_list,
)
from agent_training_client.client import DEFAULT_TARGET, AgentTrainingClient
from agent_training_client.credentials import tls_credentials
from agent_training_client.errors import AgentTrainingError
from agent_training_client.progress import ProgressPrinter

TRAINING_TYPES = enum_names(training_pb2.TrainingType, "TRAINING_TYPE_")
STATUSES = enum_names(training_pb2.TrainingStatus, "TRAINING_STATUS_")


DESCRIPTION = """\
Run the Agent Training Service, manage agents, train them, watch their jobs, ask them.

Results go to standard output: JSON (numbers as numbers) or, with -o table, tables with a
header row for lists and key/value tables for single objects; each command's --help gives its
default. Progress, summaries and errors go to standard error. An error prints as the seed's
error object (code, message, hint, retryable, trace_id), its hint naming the command to run.
Exit codes: 0 done, 1 failed, 2 wrong command line, 130 interrupted (Ctrl-C), 141 standard
output closed early (as with | head)."""


class UsageError(Exception):
    """A command line that parses but does not make sense (printed with the usage, exit 2)."""


def _client(args: argparse.Namespace) -> AgentTrainingClient:
    credentials = None
    if args.tls or args.ca_cert or args.client_cert:
        credentials = tls_credentials(args.ca_cert, args.client_cert, args.client_key)
    try:
        return AgentTrainingClient(args.target, token=args.token, credentials=credentials)
    except ValueError as error:  # a target the channel cannot use (failover.channel_target)
        raise UsageError(f"--target: {error}") from None


def command_line(args: argparse.Namespace, *words: str) -> str:
    """An ``agent-training`` command to suggest, with ``--target`` when it is not implied."""
    implied = os.environ.get("AGENT_TRAINING_TARGET") or DEFAULT_TARGET
    target = [] if args.target == implied else ["--target", args.target]
    return " ".join(["agent-training", *target, *words])


# Training -----------------------------------------------------------------------------------


def follow(
    args: argparse.Namespace, events: Iterable[training_pb2.TrainingEvent], quiet: bool
) -> int:
    """Show a job's progress to its end and print its result; Ctrl-C leaves the job running."""
    printer = ProgressPrinter(sys.stderr, enabled=not quiet)
    final = None
    try:
        for event in events:
            printer.show(event)
            if event.WhichOneof("kind") == "finished":
                final = event.finished
    except KeyboardInterrupt:
        printer.close()
        _interrupted(args, printer.training_id)
        return 130
    printer.close()
    if final is None:
        return 1
    show(final, output_format(args))
    return 0 if final.status == training_pb2.TRAINING_STATUS_SUCCEEDED else 1


def _interrupted(args: argparse.Namespace, training_id: str) -> None:
    if not training_id:
        agent = getattr(args, "agent", "") or "AGENT"
        print(
            "interrupted before the server accepted the job; see whether it started with:\n"
            f"  {command_line(args, 'jobs', 'list', '--agent', agent)}",
            file=sys.stderr,
        )
        return
    print(
        f"interrupted: job {training_id} goes on on the server.\n"
        f"  follow it again: {command_line(args, 'jobs', 'watch', training_id)}\n"
        f"  cancel it:       {command_line(args, 'jobs', 'cancel', training_id)}",
        file=sys.stderr,
    )


def _train(args: argparse.Namespace, client: AgentTrainingClient) -> int:
    if bool(args.file) == bool(args.dataset):
        raise UsageError("give a FILE of examples or --dataset NAME_OR_ID (one of them)")
    config = training_pb2.TrainingConfig()
    for name in ("epochs", "learning_rate", "batch_size", "seed", "validation_split"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.early_stopping_patience is not None:
        config.early_stopping.patience = args.early_stopping_patience
    if args.max_duration_seconds is not None:
        config.max_duration_seconds = args.max_duration_seconds
    if args.base_agent:
        config.base_agent_id = args.base_agent
    examples = reader(args)(args.file) if args.file else []
    dataset_id = cli_data.resolve_dataset(client, args.dataset) if args.dataset else ""
    events = client.train_agent(
        agent_id=args.agent,
        training_data=examples,
        dataset_id=dataset_id,
        training_type=enum_number(training_pb2.TrainingType, "TRAINING_TYPE_", args.type),
        config=config,
        request_id=args.request_id,
    )
    if args.follow:
        return follow(args, events, args.quiet)
    first = next(iter(events))
    accepted = {"training_id": first.training_id, **message_data(first.accepted)}
    show(accepted, output_format(args))
    return 0


def _jobs_watch(args: argparse.Namespace, client: AgentTrainingClient) -> int:
    return follow(args, client.watch_training_job(args.training_id, args.from_sequence), args.quiet)


def _jobs_get(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    show(client.get_training_job(args.training_id), output_format(args))


JOB_COLUMNS: list[Column] = [
    ("TRAINING_ID", field("training_id")),
    ("AGENT", field("agent_id")),
    ("TYPE", field("training_type", then=enum_text("TRAINING_TYPE_"))),
    ("STATUS", field("status", then=enum_text("TRAINING_STATUS_"))),
    ("PROGRESS", field("percent_complete", then=lambda value: f"{value:.0f}%")),
    ("EXAMPLES", field("example_count")),
    ("VAL_ACC", field("metrics", "validation_accuracy", then=fixed(3))),
    ("VERSION", field("version_id")),
    ("CREATED", field("create_time")),
]


def _jobs_list(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    status = (
        enum_number(training_pb2.TrainingStatus, "TRAINING_STATUS_", args.status)
        if (args.status)
        else 0
    )
    jobs: list[training_pb2.TrainingJob] = []
    token = ""
    while True:
        page = client.list_training_jobs(agent_id=args.agent, status=status, page_token=token)
        jobs += page.jobs
        token = page.next_page_token
        if not token:
            break
    show_list(jobs, output_format(args), JOB_COLUMNS)


def _jobs_cancel(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    show(client.cancel_training_job(args.training_id), output_format(args))


def _jobs_pause(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    show(client.pause_training_job(args.training_id), output_format(args))


def _jobs_resume(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    show(client.resume_training_job(args.training_id), output_format(args))


CHECKPOINT_COLUMNS: list[Column] = [
    ("CHECKPOINT", field("checkpoint_id")),
    ("EPOCH", field("epoch")),
    ("STEP", field("step")),
    ("LOSS", field("loss", then=fixed(4))),
    ("VAL_LOSS", field("validation_loss", then=fixed(4))),
    ("VAL_ACC", field("validation_accuracy", then=fixed(3))),
    ("BEST", field("best")),
    ("SIZE", field("size_bytes")),
    ("CREATED", field("create_time")),
]


def _jobs_checkpoints(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    checkpoints = list(client.iter_training_checkpoints(args.training_id))
    show_list(checkpoints, output_format(args), CHECKPOINT_COLUMNS)


def _jobs_version_from(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    version = client.create_version_from_checkpoint(
        args.training_id, args.checkpoint_id, activate=args.activate
    )
    show(version, output_format(args))


def _health(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    status = client.health(args.service)
    if output_format(args) == "json":
        show({"service": args.service, "status": status}, "json")
    else:
        print(status)


def _serve(args: argparse.Namespace) -> int:
    from agent_training_server.main import run  # the server is only needed by this command

    return run(args)


# Parser -------------------------------------------------------------------------------------


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--target",
        default=env("AGENT_TRAINING_TARGET") or DEFAULT_TARGET,
        metavar="HOST:PORT",
        help="address of the service (env AGENT_TRAINING_TARGET; default: %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=env("AGENT_TRAINING_TOKEN") or None,
        help="bearer token sent with every call (env AGENT_TRAINING_TOKEN; default: none)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        default=env("AGENT_TRAINING_TLS", "").lower() in ("1", "true", "yes"),
        help="connect over TLS, trusting the system's CAs (env AGENT_TRAINING_TLS=1)",
    )
    parser.add_argument(
        "--ca-cert",
        default=env("AGENT_TRAINING_CA_CERT") or None,
        metavar="PEM",
        help="CA bundle that signed the server's certificate; implies --tls"
        " (env AGENT_TRAINING_CA_CERT)",
    )
    parser.add_argument(
        "--client-cert",
        default=env("AGENT_TRAINING_CLIENT_CERT") or None,
        metavar="PEM",
        help="client certificate for mutual TLS (env AGENT_TRAINING_CLIENT_CERT)",
    )
    parser.add_argument(
        "--client-key",
        default=env("AGENT_TRAINING_CLIENT_KEY") or None,
        metavar="PEM",
        help="private key of --client-cert (env AGENT_TRAINING_CLIENT_KEY)",
    )


def _version() -> str:
    try:
        return importlib.metadata.version("agent-training")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _add_serve(commands: Any) -> None:
    from agent_training_server.config import ServerConfig, build_argument_parser

    serve = add_command(commands, "serve", "run the service", output=None)
    build_argument_parser(serve)
    defaults = {}
    for setting in dataclasses.fields(ServerConfig):
        if setting.default is not dataclasses.MISSING:
            defaults[setting.name] = setting.default
        elif setting.default_factory is not dataclasses.MISSING:
            defaults[setting.name] = setting.default_factory()
    for action in serve._actions:
        if action.dest in defaults and "default" not in (action.help or ""):
            action.help = f"{action.help} (default: {describe_default(defaults[action.dest])})"
    serve.set_defaults(handler=_serve, needs_client=False)


def _per_type(setting: str) -> str:
    """The server's default of a training setting, per training type, for a flag's help."""
    try:
        from agent_training_server.engines.defaults import defaults_for
    except ImportError:  # a client without the server package
        return " (default: the server's, per training type)"
    values = {kind: getattr(defaults_for(kind), setting) for kind in TRAINING_TYPES}
    if len(set(values.values())) == 1:
        return f" (default: {next(iter(values.values()))})"
    return " (default: " + ", ".join(f"{value:g} {kind}" for kind, value in values.items()) + ")"


def _add_training(commands: Any) -> None:
    train = add_command(commands, "train", "train an agent from a CSV or JSONL file, or a dataset")
    train.add_argument(
        "file", nargs="?", default="", help="CSV, TSV or JSONL examples (or use --dataset)"
    )
    train.add_argument("--agent", required=True, metavar="AGENT_ID", help="the agent to train")
    train.add_argument(
        "--dataset", default="", metavar="NAME_OR_ID", help="train on a stored dataset instead"
    )
    add_column_flags(train)
    train.add_argument(
        "--type", type=enum_value, choices=TRAINING_TYPES, default="supervised",
        help="training paradigm (few-shot or few_shot alike)",
    )  # fmt: skip
    train.add_argument("--epochs", type=int, help="most passes over the data" + _per_type("epochs"))
    train.add_argument(
        "--learning-rate", type=float, help="optimizer step size" + _per_type("learning_rate")
    )
    train.add_argument(
        "--batch-size", type=int, help="examples per step (0: automatic)" + _per_type("batch_size")
    )
    train.add_argument(
        "--seed", type=int, help="seed of split, initialisation and order" + _per_type("seed")
    )
    train.add_argument(
        "--validation-split",
        type=float,
        help="fraction held out to validate" + _per_type("validation_split"),
    )
    train.add_argument(
        "--early-stopping-patience",
        type=int,
        metavar="EPOCHS",
        help="epochs without improvement before stopping; 0: never early"
        + _per_type("early_stopping_patience"),
    )
    train.add_argument(
        "--max-duration-seconds",
        type=int,
        metavar="SECONDS",
        help="fail the job after this long (default: the server's max_job_seconds)",
    )
    train.add_argument(
        "--base-agent", default="", metavar="AGENT_ID",
        help="transfer: start from this agent's active version",
    )  # fmt: skip
    train.add_argument("--request-id", default="", help="idempotency key for safe retries")
    train.add_argument(
        "--follow", action="store_true", help="show live progress and print the final result"
    )
    train.add_argument("--quiet", action="store_true", help="with --follow: no progress lines")
    train.set_defaults(handler=_train, usage_parser=train)

    jobs = add_command(commands, "jobs", "training jobs", output=None).add_subparsers(
        dest="jobs_command", required=True, metavar="COMMAND"
    )
    watch = add_command(jobs, "watch", "re-attach to a job: replay its events, follow live ones")
    watch.add_argument("training_id")
    watch.add_argument(
        "--from-sequence", type=int, default=0, help="replay events after this sequence number"
    )
    watch.add_argument("--quiet", action="store_true", help="no progress lines")
    watch.set_defaults(handler=_jobs_watch)
    for name, handler, text in (
        ("get", _jobs_get, "show a job"),
        ("cancel", _jobs_cancel, "cancel a queued, running or paused job"),
        (
            "pause",
            _jobs_pause,
            "pause a queued or running job (it checkpoints and frees its worker)",
        ),
        ("resume", _jobs_resume, "queue a paused job again; it continues where it paused"),
    ):
        sub = add_command(jobs, name, text)
        sub.add_argument("training_id")
        sub.set_defaults(handler=handler)
    listing = add_command(jobs, "list", "list training jobs, newest first", output="table")
    listing.add_argument("--agent", default="", metavar="AGENT_ID", help="one agent's jobs")
    listing.add_argument(
        "--status", type=enum_value, choices=STATUSES, default=None, help="only jobs in this status"
    )
    listing.set_defaults(handler=_jobs_list)
    kept = add_command(jobs, "checkpoints", "list a job's kept checkpoints", output="table")
    kept.add_argument("training_id")
    kept.set_defaults(handler=_jobs_checkpoints)
    version = add_command(jobs, "version-from", "make a version from a job's kept checkpoint")
    version.add_argument("training_id")
    version.add_argument("checkpoint_id", help="e.g. epoch-3 (see 'jobs checkpoints')")
    version.add_argument("--activate", action="store_true", help="make it the active version")
    version.set_defaults(handler=_jobs_version_from)


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = Parser(
        prog="agent-training",
        description=DESCRIPTION,
        epilog="Enum values take hyphens or underscores alike (few-shot, few_shot).",
    )
    parser.add_argument("--version", action="version", version=f"agent-training {_version()}")
    _add_connection_flags(parser)
    parser.add_argument(
        "-o", "--output", type=enum_value, choices=("json", "table"), default=None,
        help="output format of the command (default: the command's own, see its --help)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    cli_agents.add_commands(commands)
    _add_training(commands)
    cli_data.add_commands(commands)
    cli_analysis.add_command(commands)
    health = add_command(commands, "health", "standard gRPC health check", output="table")
    health.add_argument("service", nargs="?", default="", help="service name (default: overall)")
    health.set_defaults(handler=_health)
    return parser


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    # Answers and exits only when bash's completion hook runs the command (_ARGCOMPLETE set);
    # imported here so that ordinary runs do not pay for it.
    import argcomplete

    argcomplete.autocomplete(parser)


def _run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    handler: Callable[..., int | None] = args.handler
    try:
        if not getattr(args, "needs_client", True):
            return handler(args) or 0
        with _client(args) as client:
            return handler(args, client) or 0
    except AgentTrainingError as error:
        print_error(error, args)
        return 1
    except UsageError as error:
        subcommand = getattr(args, "usage_parser", None) or parser
        subcommand.print_usage(sys.stderr)
        print(f"{subcommand.prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        print_error(_os_error(error), args)
        return 1


def _os_error(error: OSError) -> AgentTrainingError:
    where = f"{error.filename}: " if error.filename else ""
    return AgentTrainingError(
        code="FILE_ERROR",
        message=f"{where}{error.strerror or error}",
        hint="Check the path and its permissions.",
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    parser = build_parser()
    _autocomplete(parser)
    try:
        code = _run(parser, argv)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        # The reader left (`| head -1`): stop quietly, as tools killed by SIGPIPE do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 141
    except KeyboardInterrupt:
        print(file=sys.stderr)
        code = 130
    sys.exit(code)
