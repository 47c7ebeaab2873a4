"""Errors as the CLI prints them: the seed's error object, with hints that name CLI commands.

The server's hints speak of RPCs ("CreateAgent first; ListAgents shows existing agents") because
its callers are programs. A person at the command line needs the command instead, so the CLI
replaces the hint of each code below (docs/errors.md lists the codes; they are stable) and keeps
the server's hint for any other code.
"""

from __future__ import annotations

import argparse
import json
import re
import string
import sys
from collections.abc import Callable
from typing import TextIO

from agent_training_client.errors import AgentTrainingError

Hint = str | Callable[[AgentTrainingError, dict[str, str]], str | None]

HINTS: dict[str, Hint] = {
    "AGENT_NOT_FOUND": "See the agents with `agent-training agents list`, or create it:"
    " `agent-training agents create {agent}`.",
    "AGENT_ALREADY_EXISTS": "Pick another id, or use the existing agent"
    " (`agent-training agents get {agent}`).",
    "VERSION_NOT_FOUND": "`agent-training agents versions {agent}` lists the agent's versions.",
    "TRAINING_JOB_NOT_FOUND": "`agent-training jobs list` lists the jobs"
    " (`--agent ID` for one agent's).",
    "AGENT_HAS_RUNNING_JOBS": "Cancel them (`agent-training jobs list --agent {agent}`, then"
    " `agent-training jobs cancel TRAINING_ID`), or delete with --force.",
    "JOB_ALREADY_ENDED": "Nothing to cancel: `agent-training jobs get {training_id}` shows how"
    " it ended.",
    "NO_ACTIVE_VERSION": "Train it first: `agent-training train FILE --agent {agent} --follow`"
    " (or pass --version VERSION_ID).",
    "BASE_AGENT_NOT_FOUND": "`agent-training agents list` shows the agents; leave out"
    " --base-agent to start from the pretrained encoder.",
    "BASE_AGENT_UNTRAINED": "Train the base agent first (`agent-training train FILE --agent"
    " {base_agent} --type few-shot --follow`).",
    "BASE_ENCODER_NOT_TRANSFERABLE": "Name a few-shot or transfer agent as --base-agent, or"
    " leave it out to start from the pretrained encoder.",
    "DATASET_NOT_FOUND": "`agent-training datasets list` shows the datasets' names and ids.",
    "DATASET_ALREADY_EXISTS": "Pick another name, or delete the existing dataset"
    " (`agent-training datasets delete NAME`).",
    "NO_EVALUATION_DATA": "Pass --eval FILE or --dataset NAME.",
    "NO_TRAINING_DATA": "Analyse a version made by `agent-training train`.",
    "INVOCATION_NOT_FOUND": "Pass the invocation_id of an `agent-training invoke` answer.",
    "INVOCATION_OF_ANOTHER_AGENT": "Record the feedback on the agent that answered (the"
    " invoke answer's agent).",
    "NOT_ENOUGH_FEEDBACK": "Record more first: `agent-training feedback {agent} INVOCATION_ID"
    " correct|incorrect` for answers of `agent-training invoke`.",
    "TOKEN_MISSING": "Pass --token TOKEN, or set AGENT_TRAINING_TOKEN.",
    "TOKEN_MALFORMED": "Pass the token alone with --token (or AGENT_TRAINING_TOKEN), without"
    " 'Bearer'.",
    "TOKEN_INVALID": "Pass a valid token with --token or AGENT_TRAINING_TOKEN.",
    "TOKEN_EXPIRED": "Get a fresh token and pass it with --token or AGENT_TRAINING_TOKEN.",
    "SERVER_SHUTTING_DOWN": "The job goes on once the server is back: re-attach with"
    " `agent-training jobs watch {training_id}`.",
    "ANALYSIS_INTERRUPTED": "Run the same `agent-training analyze` command again.",
    "ANALYSIS_NOT_FOUND": "Run `agent-training analyze AGENT` again.",
    "MESSAGE_TOO_LARGE": "Store the file as a dataset first (`agent-training datasets upload"
    " FILE --name NAME`, sent in chunks), then `agent-training train --dataset NAME`.",
    "DEADLINE_EXCEEDED": "The server stopped the call's work; for long work use the commands"
    " that follow a job (`agent-training train --follow`, `agent-training analyze`).",
}

# Request fields as the CLI's flags name them, for INVALID_ARGUMENT.
FLAGS = {
    "agent_id": "the agent",
    "training_data": "the examples of FILE",
    "dataset_id": "--dataset",
    "config.epochs": "--epochs",
    "config.learning_rate": "--learning-rate",
    "config.batch_size": "--batch-size",
    "config.seed": "--seed",
    "config.validation_split": "--validation-split",
    "config.base_agent_id": "--base-agent",
    "config.early_stopping": "--early-stopping-patience",
    "config.max_duration_seconds": "--max-duration-seconds",
    "count": "--count",
    "parameters.topics": "--topics",
    "parameters.seed": "--seed",
    "parameters.min_confidence": "--min-confidence",
    "parameters.grammar": "--grammar",
    "parameters.source_examples": "the examples of --source",
    "evaluation_data": "the examples of --eval",
    "performance_metrics": "--metric",
    "targets": "--goal",
    "feedback": "FEEDBACK",
    "save_as": "--save-as",
    "name": "--name",
    "display_name": "--name",
}


def _invalid_argument(error: AgentTrainingError, context: dict[str, str]) -> str | None:
    flags: list[str] = []
    for violation in error.field_violations:
        path = re.sub(r"\[\d+\]", "", violation.field)
        for field in sorted(FLAGS, key=len, reverse=True):
            if path == field or path.startswith(field + "."):
                if FLAGS[field] not in flags:
                    flags.append(FLAGS[field])
                break
    if not flags:
        return None
    command = context.get("command", "")
    more = f"; `agent-training {command} --help` describes them" if command else ""
    return f"Fix {', '.join(flags)} as the message says{more}."


def _unavailable(error: AgentTrainingError, context: dict[str, str]) -> str | None:
    if error.trace_id:
        return None  # the server answered: it is starting or stopping, and its hint says so
    return (
        f"No server answers at {context['target']}. Start one with `agent-training serve` (or"
        " `make run` in a checkout of the project), or point the CLI at a running one with"
        " --target HOST:PORT or AGENT_TRAINING_TARGET."
    )


HINTS["INVALID_ARGUMENT"] = _invalid_argument
HINTS["UNAVAILABLE"] = _unavailable

PLACEHOLDERS = {
    "agent": "AGENT",
    "training_id": "TRAINING_ID",
    "base_agent": "BASE_AGENT",
    "target": "HOST:PORT",
}


class _Defaults(dict):
    def __missing__(self, key: str) -> str:
        return PLACEHOLDERS.get(key, key.upper())


def context_of(args: argparse.Namespace | None) -> dict[str, str]:
    """What a hint may name from the command line: the agent, the job, the server."""
    if args is None:
        return {}
    context = {
        "agent": getattr(args, "agent", None) or getattr(args, "agent_id", None),
        "training_id": getattr(args, "training_id", None),
        "base_agent": getattr(args, "base_agent", None),
        "target": getattr(args, "target", None),
        "command": " ".join(
            part
            for part in (
                getattr(args, "command", None),
                getattr(args, "agents_command", None),
                getattr(args, "jobs_command", None),
                getattr(args, "action", None),
            )
            if part
        ),
    }
    return {key: value for key, value in context.items() if isinstance(value, str) and value}


def cli_hint(error: AgentTrainingError, args: argparse.Namespace | None = None) -> str:
    """The hint for a person at the command line: the table's, else the error's own."""
    hint = HINTS.get(error.code)
    context = context_of(args)
    if callable(hint):
        hint = hint(error, context)
    if not hint:
        return error.hint
    return string.Formatter().vformat(hint, (), _Defaults(context))


def cli_message(error: AgentTrainingError, args: argparse.Namespace | None = None) -> str:
    """The message, with a refused connection said plainly."""
    if error.code == "UNAVAILABLE" and not error.trace_id and args is not None:
        reason = error.message.rsplit(": ", 1)[-1] if ": " in error.message else error.message
        return f"cannot reach a server at {args.target} ({reason})"
    return error.message


def print_error(
    error: AgentTrainingError, args: argparse.Namespace | None = None, stream: TextIO | None = None
) -> None:
    """Print the seed's error object, with the CLI's message and hint, on standard error."""
    shown = error.to_dict()
    shown["message"] = cli_message(error, args)
    shown["hint"] = cli_hint(error, args)
    print(json.dumps(shown, indent=2, ensure_ascii=False), file=stream or sys.stderr)
