"""The ``agent-training`` command line: run the server, manage agents, train, watch, invoke."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from agent_training.v1 import training_pb2
from agent_training_client import cli_analysis, cli_data
from agent_training_client.client import DEFAULT_TARGET, AgentTrainingClient
from agent_training_client.credentials import tls_credentials
from agent_training_client.errors import AgentTrainingError
from agent_training_client.progress import ProgressPrinter

TRAINING_TYPES = ("supervised", "reinforcement", "few_shot", "transfer")


def _print_message(message: Message) -> None:
    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2))


def _client(args: argparse.Namespace) -> AgentTrainingClient:
    credentials = None
    if args.tls or args.ca_cert or args.client_cert:
        credentials = tls_credentials(args.ca_cert, args.client_cert, args.client_key)
    return AgentTrainingClient(args.target, token=args.token, credentials=credentials)


# Agents -------------------------------------------------------------------------------------


def _agents_create(args: argparse.Namespace) -> None:
    labels = dict(label.split("=", 1) for label in args.label)
    with _client(args) as client:
        _print_message(
            client.create_agent(
                agent_id=args.agent_id or "",
                display_name=args.name,
                description=args.description,
                labels=labels,
                request_id=args.request_id,
            )
        )


def _agents_get(args: argparse.Namespace) -> None:
    with _client(args) as client:
        _print_message(client.get_agent(args.agent_id))


def _agents_list(args: argparse.Namespace) -> None:
    with _client(args) as client:
        for agent in client.iter_agents():
            active = agent.active_version_id or "-"
            print(
                f"{agent.agent_id}\t{agent.display_name}\tversions={agent.version_count}"
                f"\tactive={active}"
            )


def _agents_delete(args: argparse.Namespace) -> None:
    with _client(args) as client:
        client.delete_agent(args.agent_id, force=args.force)
        print(f"deleted {args.agent_id}")


def _agents_versions(args: argparse.Namespace) -> None:
    with _client(args) as client:
        token = ""
        while True:
            page = client.list_agent_versions(args.agent_id, page_token=token)
            for version in page.versions:
                mark = "*" if version.active else " "
                accuracy = version.metrics.validation_accuracy
                print(
                    f"{mark} {version.version_id}\tv{version.version_number}\t{version.source}"
                    f"\toutputs={len(version.outputs)}\tval_acc={accuracy:.4f}"
                )
            token = page.next_page_token
            if not token:
                return


def _agents_activate(args: argparse.Namespace) -> None:
    with _client(args) as client:
        _print_message(client.activate_agent_version(args.agent_id, args.version_id))


# Training -----------------------------------------------------------------------------------


def read_examples(path: Path) -> Iterator[training_pb2.TrainingExample]:
    """Read examples from JSONL, or CSV with input/text and expected_output/label/category."""
    if path.suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json_format.ParseDict(
                        json.loads(line), training_pb2.TrainingExample(), ignore_unknown_fields=True
                    )
        return
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = row.get("input") or row.get("text") or ""
            output = row.get("expected_output") or row.get("label") or row.get("category") or ""
            yield training_pb2.TrainingExample(
                input=text, expected_output=output, feedback=row.get("feedback") or ""
            )


def _follow(events: Iterable[training_pb2.TrainingEvent], quiet: bool) -> int:
    printer = ProgressPrinter(sys.stderr, enabled=not quiet)
    final = None
    for event in events:
        printer.show(event)
        if event.WhichOneof("kind") == "finished":
            final = event.finished
    printer.close()
    if final is None:
        return 1
    _print_message(final)
    return 0 if final.status == training_pb2.TRAINING_STATUS_SUCCEEDED else 1


def _train(args: argparse.Namespace) -> int:
    config = training_pb2.TrainingConfig()
    for name in ("epochs", "learning_rate", "batch_size", "seed", "validation_split"):
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, value)
    if args.base_agent:
        config.base_agent_id = args.base_agent
    training_type = training_pb2.TrainingType.Value(f"TRAINING_TYPE_{args.type.upper()}")
    with _client(args) as client:
        events = client.train_agent(
            agent_id=args.agent,
            training_data=list(read_examples(Path(args.file))) if args.file else [],
            dataset_id=args.dataset,
            training_type=training_type,
            config=config,
            request_id=args.request_id,
        )
        if args.follow:
            return _follow(events, args.quiet)
        first = next(iter(events))
        print(first.training_id)
        return 0


def _jobs_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _follow(client.watch_training_job(args.training_id, args.from_sequence), args.quiet)


def _jobs_get(args: argparse.Namespace) -> None:
    with _client(args) as client:
        _print_message(client.get_training_job(args.training_id))


def _jobs_list(args: argparse.Namespace) -> None:
    with _client(args) as client:
        page = client.list_training_jobs(agent_id=args.agent or "")
        for job in page.jobs:
            status = training_pb2.TrainingStatus.Name(job.status).removeprefix("TRAINING_STATUS_")
            print(f"{job.training_id}\t{job.agent_id}\t{status}\t{job.percent_complete:.0f}%")


def _jobs_cancel(args: argparse.Namespace) -> None:
    with _client(args) as client:
        _print_message(client.cancel_training_job(args.training_id))


def _invoke(args: argparse.Namespace) -> None:
    with _client(args) as client:
        fields: dict[str, Any] = {"agent_id": args.agent}
        if len(args.text) == 1:
            fields["input"] = args.text[0]
        else:
            fields["inputs"] = args.text
        _print_message(client.invoke_agent(**fields))


def _with_client(command: Any) -> Any:
    """Adapt a data command, command(args, client, read_examples), to a CLI handler."""

    def handler(args: argparse.Namespace) -> int:
        with _client(args) as client:
            return command(args, client, read_examples)

    return handler


def _feedback(args: argparse.Namespace) -> None:
    with _client(args) as client:
        _print_message(
            client.record_feedback(
                agent_id=args.agent,
                invocation_id=args.invocation_id,
                feedback=args.feedback,
                corrected_output=args.corrected,
                comment=args.comment,
            )
        )


def _pairs(items: list[str], flag: str) -> dict[str, float]:
    pairs = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            pairs[name] = float(value)
        except ValueError:
            raise SystemExit(f"{flag} {item!r}: expected NAME=NUMBER") from None
    return pairs


def _adapt(args: argparse.Namespace) -> None:
    from agent_training.v1 import adaptation_pb2

    strategy = adaptation_pb2.AdaptationStrategy.Value(
        f"ADAPTATION_STRATEGY_{args.strategy.upper()}"
    )
    with _client(args) as client:
        _print_message(
            client.adapt_agent_behavior(
                agent_id=args.agent,
                performance_metrics=_pairs(args.metric, "--metric"),
                adaptation_strategy=strategy,
                targets=_pairs(args.goals, "--goal"),
                dry_run=args.dry_run,
            )
        )


def _health(args: argparse.Namespace) -> None:
    with _client(args) as client:
        print(client.health(args.service))


def _serve(args: argparse.Namespace) -> int:
    from agent_training_server.main import run  # the server is only needed by this command

    return run(args)


# Parser -------------------------------------------------------------------------------------


def _add_security_flags(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--token",
        default=env("AGENT_TRAINING_TOKEN") or None,
        help="bearer token sent with every call (env AGENT_TRAINING_TOKEN)",
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
        help="PEM CA bundle that signed the server's certificate; implies --tls"
        " (env AGENT_TRAINING_CA_CERT)",
    )
    parser.add_argument(
        "--client-cert",
        default=env("AGENT_TRAINING_CLIENT_CERT") or None,
        help="PEM client certificate for mutual TLS (env AGENT_TRAINING_CLIENT_CERT)",
    )
    parser.add_argument(
        "--client-key",
        default=env("AGENT_TRAINING_CLIENT_KEY") or None,
        help="PEM private key of --client-cert (env AGENT_TRAINING_CLIENT_KEY)",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="agent-training", description=__doc__)
    parser.add_argument(
        "--target",
        default=os.environ.get("AGENT_TRAINING_TARGET", DEFAULT_TARGET),
        help="host:port of the service (env AGENT_TRAINING_TARGET)",
    )
    _add_security_flags(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    from agent_training_server.config import build_argument_parser

    build_argument_parser(serve)
    serve.set_defaults(handler=_serve)

    agents = commands.add_parser("agents", help="manage agents").add_subparsers(
        dest="agents_command", required=True
    )
    create = agents.add_parser("create", help="create an agent")
    create.add_argument("agent_id", nargs="?", help="id (default: assigned by the server)")
    create.add_argument("--name", default="", help="display name")
    create.add_argument("--description", default="")
    create.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    create.add_argument("--request-id", default="", help="idempotency key for safe retries")
    create.set_defaults(handler=_agents_create)
    for name, handler, text in (
        ("get", _agents_get, "show an agent"),
        ("versions", _agents_versions, "list an agent's versions"),
    ):
        sub = agents.add_parser(name, help=text)
        sub.add_argument("agent_id")
        sub.set_defaults(handler=handler)
    agents.add_parser("list", help="list agents").set_defaults(handler=_agents_list)
    delete = agents.add_parser("delete", help="delete an agent")
    delete.add_argument("agent_id")
    delete.add_argument("--force", action="store_true", help="also cancel its running jobs")
    delete.set_defaults(handler=_agents_delete)
    activate = agents.add_parser("activate", help="make a version active (rollback)")
    activate.add_argument("agent_id")
    activate.add_argument("version_id")
    activate.set_defaults(handler=_agents_activate)

    train = commands.add_parser("train", help="train an agent from a CSV or JSONL file")
    train.add_argument("file", nargs="?", default="", help="CSV or JSONL (or use --dataset)")
    train.add_argument("--agent", required=True)
    train.add_argument("--dataset", default="", help="train on a stored dataset instead")
    train.add_argument("--type", choices=TRAINING_TYPES, default="supervised")
    train.add_argument("--epochs", type=int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--validation-split", type=float)
    train.add_argument("--base-agent", default="")
    train.add_argument("--request-id", default="")
    train.add_argument("--follow", action="store_true", help="show live progress to the end")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_train)

    jobs = commands.add_parser("jobs", help="training jobs").add_subparsers(
        dest="jobs_command", required=True
    )
    watch = jobs.add_parser("watch", help="re-attach to a job's progress")
    watch.add_argument("training_id")
    watch.add_argument("--from-sequence", type=int, default=0)
    watch.add_argument("--quiet", action="store_true")
    watch.set_defaults(handler=_jobs_watch)
    for name, handler in (("get", _jobs_get), ("cancel", _jobs_cancel)):
        sub = jobs.add_parser(name)
        sub.add_argument("training_id")
        sub.set_defaults(handler=handler)
    listing = jobs.add_parser("list")
    listing.add_argument("--agent", default="")
    listing.set_defaults(handler=_jobs_list)

    invoke = commands.add_parser("invoke", help="ask a trained agent")
    invoke.add_argument("--agent", required=True)
    invoke.add_argument("text", nargs="+")
    invoke.set_defaults(handler=_invoke)

    feedback = commands.add_parser("feedback", help="record how an answer was received")
    feedback.add_argument("agent")
    feedback.add_argument("invocation_id", help="from an invoke answer")
    feedback.add_argument("feedback", help='"correct", "incorrect" or a reward in [-1, 1]')
    feedback.add_argument("--corrected", default="", help="the output that would have been right")
    feedback.add_argument("--comment", default="")
    feedback.set_defaults(handler=_feedback)

    adapt = commands.add_parser("adapt", help="adapt an agent's behaviour from production metrics")
    adapt.add_argument("agent")
    adapt.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE",
                       help="e.g. success_rate=0.85 (repeatable)")  # fmt: skip
    adapt.add_argument(
        "--strategy",
        required=True,
        choices=("threshold", "conservative", "aggressive", "calibration", "rollback",
                 "reinforcement", "exploration"),
    )  # fmt: skip
    # Not --target: that flag names the server.
    adapt.add_argument("--goal", action="append", default=[], metavar="NAME=VALUE",
                       dest="goals", help="target, e.g. success_rate=0.9")  # fmt: skip
    adapt.add_argument("--dry-run", action="store_true", help="show the changes, store nothing")
    adapt.set_defaults(handler=_adapt)

    cli_data.add_commands(commands, _with_client)
    cli_analysis.add_command(commands, _with_client)

    health = commands.add_parser("health", help="standard health check")
    health.add_argument("service", nargs="?", default="")
    health.set_defaults(handler=_health)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except AgentTrainingError as error:
        print(json.dumps(error.to_dict(), indent=2), file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code or 0)
