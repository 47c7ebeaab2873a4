"""The agent commands of ``agent-training``: ``agents``, ``invoke``, ``feedback``, ``adapt``."""

from __future__ import annotations

import argparse
import hashlib
from typing import Any

from agent_training.v1 import adaptation_pb2, agents_pb2
from agent_training_client.cli_args import (
    add_command,
    enum_names,
    enum_number,
    enum_value,
    output_format,
)
from agent_training_client.cli_output import (
    Column,
    enum_text,
    field,
    fixed,
    message_data,
    print_table,
    show,
    show_list,
)
from agent_training_client.client import AgentTrainingClient
from agent_training_client.errors import AgentTrainingError

STRATEGIES = enum_names(adaptation_pb2.AdaptationStrategy, "ADAPTATION_STRATEGY_")


def _agents_create(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    labels = dict(_pair(label, "--label", str) for label in args.label)
    agent = client.create_agent(
        agent_id=args.agent_id or "",
        display_name=args.name,
        description=args.description,
        labels=labels,
        request_id=args.request_id,
    )
    show(agent, output_format(args))


def _agents_get(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    show(client.get_agent(args.agent_id), output_format(args))


AGENT_COLUMNS: list[Column] = [
    ("AGENT_ID", field("agent_id")),
    ("NAME", field("display_name")),
    ("VERSIONS", field("version_count")),
    ("ACTIVE_VERSION", field("active_version_id")),
    ("UPDATED", field("update_time")),
]


def _agents_list(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    show_list(client.iter_agents(), output_format(args), AGENT_COLUMNS)


def _agents_delete(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    client.delete_agent(args.agent_id, force=args.force)
    show({"deleted": args.agent_id}, output_format(args))


VERSION_COLUMNS: list[Column] = [
    ("ACTIVE", field("active", then=lambda active: "*" if active else "")),
    ("VERSION_ID", field("version_id")),
    ("NUMBER", field("version_number")),
    ("SOURCE", field("source")),
    ("TYPE", field("training_type", then=enum_text("TRAINING_TYPE_"))),
    ("OUTPUTS", field("outputs", then=len)),
    ("ACCURACY", field("metrics", "accuracy", then=fixed(3))),
    ("VAL_ACC", field("metrics", "validation_accuracy", then=fixed(3))),
    ("CREATED", field("create_time")),
]


def _agents_versions(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    versions: list[agents_pb2.AgentVersion] = []
    token = ""
    while True:
        page = client.list_agent_versions(args.agent_id, page_token=token)
        versions += page.versions
        token = page.next_page_token
        if not token:
            break
    show_list(versions, output_format(args), VERSION_COLUMNS)


def _agents_activate(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    show(client.activate_agent_version(args.agent_id, args.version_id), output_format(args))


def _agents_export(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    header, path = client.export_agent_version(args.agent_id, args.version, args.out)
    with path.open("rb") as handle:  # checked against the trailer already; shown for the user
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    exported = {
        "path": str(path),
        "version_id": header.version.version_id,
        "format": header.format,
        "size_bytes": header.size_bytes,
        "sha256": sha256,
        "onnx": header.onnx,
        "files": list(header.files),
    }
    show(exported, output_format(args))


PREDICTION_COLUMNS: list[Column] = [
    ("INPUT", field("input")),
    ("OUTPUT", field("output")),
    ("CONFIDENCE", field("confidence", then=fixed(3))),
    ("FALLBACK", field("is_fallback")),
    (
        "RUNNER_UP",
        field(
            "alternatives",
            then=lambda alternatives: (
                f"{alternatives[0].get('output')} {alternatives[0].get('confidence', 0):.3f}"
                if alternatives
                else None
            ),
        ),
    ),
    ("INVOCATION_ID", field("invocation_id")),
]


def _invoke(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    fields: dict[str, Any] = {"agent_id": args.agent}
    if args.version:
        fields["version_id"] = args.version
    if len(args.text) == 1:
        fields["input"] = args.text[0]
    else:
        fields["inputs"] = args.text
    answer = client.invoke_agent(**fields)
    if output_format(args) == "table":
        print_table(message_data(answer)["predictions"], PREDICTION_COLUMNS)
    else:
        show(answer, "json")


def _feedback(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    recorded = client.record_feedback(
        agent_id=args.agent,
        invocation_id=args.invocation_id,
        feedback=args.feedback,
        corrected_output=args.corrected,
        comment=args.comment,
    )
    show(recorded, output_format(args))


def _pair(item: str, flag: str, kind: type) -> tuple[str, Any]:
    name, equals, value = item.partition("=")
    try:
        if not name or not equals:
            raise ValueError(item)
        return name, kind(value)
    except ValueError:
        expected = "NAME=NUMBER" if kind is float else "KEY=VALUE"
        raise AgentTrainingError(
            code="INVALID_ARGUMENT",
            message=f"{flag} {item!r}: expected {expected}",
            hint=f"Write it as {flag} {'success_rate=0.85' if kind is float else 'team=support'}.",
        ) from None


def _adapt(args: argparse.Namespace, client: AgentTrainingClient) -> None:
    response = client.adapt_agent_behavior(
        agent_id=args.agent,
        performance_metrics=dict(_pair(item, "--metric", float) for item in args.metric),
        adaptation_strategy=enum_number(
            adaptation_pb2.AdaptationStrategy, "ADAPTATION_STRATEGY_", args.strategy
        ),
        targets=dict(_pair(item, "--goal", float) for item in args.goals),
        dry_run=args.dry_run,
    )
    show(response, output_format(args))


def add_commands(commands: Any) -> None:
    """Add ``agents``, ``invoke``, ``feedback`` and ``adapt`` to the CLI."""
    agents = add_command(commands, "agents", "manage agents", output=None).add_subparsers(
        dest="agents_command", required=True, metavar="COMMAND"
    )
    create = add_command(agents, "create", "create an agent")
    create.add_argument("agent_id", nargs="?", help="id (default: assigned by the server)")
    create.add_argument("--name", default="", help="display name")
    create.add_argument("--description", default="", help="what the agent is for")
    create.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="a label (repeatable)"
    )
    create.add_argument("--request-id", default="", help="idempotency key for safe retries")
    create.set_defaults(handler=_agents_create)
    get = add_command(agents, "get", "show an agent")
    get.add_argument("agent_id")
    get.set_defaults(handler=_agents_get)
    versions = add_command(
        agents, "versions", "list an agent's versions, newest first", output="table"
    )
    versions.add_argument("agent_id")
    versions.set_defaults(handler=_agents_versions)
    listing = add_command(agents, "list", "list agents", output="table")
    listing.set_defaults(handler=_agents_list)
    delete = add_command(agents, "delete", "delete an agent", output="table")
    delete.add_argument("agent_id")
    delete.add_argument("--force", action="store_true", help="also cancel its running jobs")
    delete.set_defaults(handler=_agents_delete)
    activate = add_command(agents, "activate", "make a version active (rollback)")
    activate.add_argument("agent_id")
    activate.add_argument("version_id", help="from `agent-training agents versions AGENT`")
    activate.set_defaults(handler=_agents_activate)
    export = add_command(
        agents, "export", "download a version as a bundle (weights, manifest, ONNX model)"
    )
    export.add_argument("agent_id")
    export.add_argument(
        "--version", default="", metavar="VERSION_ID", help="a version other than the active one"
    )
    export.add_argument(
        "--out", default=None, metavar="PATH", help="the file to write (default: AGENT-VERSION.tar)"
    )
    export.set_defaults(handler=_agents_export)

    invoke = add_command(commands, "invoke", "ask a trained agent")
    invoke.add_argument("--agent", required=True, metavar="AGENT_ID", help="the agent to ask")
    invoke.add_argument(
        "--version", default="", metavar="VERSION_ID", help="a version other than the active one"
    )
    invoke.add_argument("text", nargs="+", help="one or more inputs")
    invoke.set_defaults(handler=_invoke)

    feedback = add_command(commands, "feedback", "record how an answer was received")
    feedback.add_argument("agent", help="the agent that answered")
    feedback.add_argument("invocation_id", help="from an invoke answer")
    feedback.add_argument("feedback", help='"correct", "incorrect" or a reward in [-1, 1]')
    feedback.add_argument("--corrected", default="", help="the output that would have been right")
    feedback.add_argument("--comment", default="", help="free text kept with the feedback")
    feedback.set_defaults(handler=_feedback)

    adapt = add_command(commands, "adapt", "adapt an agent's behaviour from production metrics")
    adapt.add_argument("agent", help="the agent to adapt")
    adapt.add_argument("--metric", action="append", default=[], metavar="NAME=VALUE",
                       help="observed, e.g. success_rate=0.85 (repeatable)")  # fmt: skip
    adapt.add_argument(
        "--strategy", required=True, type=enum_value, choices=STRATEGIES,
        help="what to change",
    )  # fmt: skip
    # Not --target: that flag names the server.
    adapt.add_argument("--goal", action="append", default=[], metavar="NAME=VALUE",
                       dest="goals", help="target, e.g. success_rate=0.9 (repeatable)")  # fmt: skip
    adapt.add_argument("--dry-run", action="store_true", help="show the changes, store nothing")
    adapt.set_defaults(handler=_adapt)
