"""The data commands of ``agent-training``: ``generate`` synthetic examples and ``datasets``."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

from google.protobuf import json_format

from agent_training.v1 import synthetic_pb2
from agent_training_client.cli_args import (
    add_command,
    enum_names,
    enum_number,
    enum_value,
    output_format,
)
from agent_training_client.cli_examples import add_column_flags, open_text, reader
from agent_training_client.cli_output import (
    Column,
    field,
    message_data,
    show,
    show_list,
    table_lines,
)
from agent_training_client.client import AgentTrainingClient
from agent_training_client.errors import AgentTrainingError
from agent_training_client.progress import StatusLine

DATA_TYPES = enum_names(synthetic_pb2.SyntheticDataType, "SYNTHETIC_DATA_TYPE_")
DIFFICULTIES = enum_names(synthetic_pb2.Difficulty, "DIFFICULTY_")
LABELS = enum_names(synthetic_pb2.SyntheticLabel, "SYNTHETIC_LABEL_")
DATASET_ID = re.compile(r"^ds_[0-9a-f]{16}$")


def resolve_dataset(client: AgentTrainingClient, name_or_id: str) -> str:
    """The id of a dataset named by its id (``ds_...``) or by its name.

    Raises:
        AgentTrainingError: DATASET_NOT_FOUND when no dataset has that name,
            DATASET_NAME_AMBIGUOUS when several have.
    """
    if DATASET_ID.match(name_or_id):
        return name_or_id
    matches = []
    token = ""
    while True:
        page = client.list_datasets(page_token=token)
        matches += [d.dataset_id for d in page.datasets if d.name == name_or_id]
        token = page.next_page_token
        if not token:
            break
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AgentTrainingError(
            code="DATASET_NOT_FOUND",
            message=f"no dataset is named {name_or_id!r}",
            hint="`agent-training datasets list` shows the datasets' names and ids.",
        )
    raise AgentTrainingError(
        code="DATASET_NAME_AMBIGUOUS",
        message=f"{len(matches)} datasets are named {name_or_id!r}: {', '.join(matches)}",
        hint="Name the one you mean by its id.",
    )


def example_line(example: synthetic_pb2.SyntheticExample) -> str:
    """One JSONL line: the training example's fields plus its metadata, flat.

    `agent-training train FILE` reads it back (metadata is ignored).
    """
    record: dict[str, Any] = json_format.MessageToDict(
        example.example, preserving_proto_field_name=True
    )
    for name in ("topic", "intent", "generator"):
        if getattr(example, name):
            record[name] = getattr(example, name)
    if example.difficulty:
        name = synthetic_pb2.Difficulty.Name(example.difficulty)
        record["difficulty"] = name.removeprefix("DIFFICULTY_").lower()
    return json.dumps(record, ensure_ascii=False)


def _parameters(
    args: argparse.Namespace, client: AgentTrainingClient
) -> synthetic_pb2.SyntheticDataParameters:
    parameters = synthetic_pb2.SyntheticDataParameters(
        topics=[topic.strip() for topic in args.topics.split(",") if topic.strip()],
        agent_id=args.agent,
        dataset_id=resolve_dataset(client, args.dataset) if args.dataset else "",
        target_agent_id=args.target_agent,
        fallback_output=args.fallback,
        encoder_synonyms=args.encoder_synonyms,
    )
    if args.difficulty:
        parameters.difficulty = enum_number(
            synthetic_pb2.Difficulty, "DIFFICULTY_", args.difficulty
        )
    if args.label:
        parameters.label = enum_number(synthetic_pb2.SyntheticLabel, "SYNTHETIC_LABEL_", args.label)
    if args.seed is not None:
        parameters.seed = args.seed
    if args.min_confidence is not None:
        parameters.min_confidence = args.min_confidence
    if args.grammar:
        parameters.grammar = open_text(args.grammar, "grammar file")
    if args.source:
        parameters.source_examples.extend(reader(args)(args.source))
    return parameters


def generate(args: argparse.Namespace, client: AgentTrainingClient) -> int:
    """`agent-training generate TYPE --count N ...`: stream examples to JSONL."""
    data_type = enum_number(synthetic_pb2.SyntheticDataType, "SYNTHETIC_DATA_TYPE_", args.data_type)
    stream = client.generate_synthetic_training_data(
        data_type=data_type,
        count=args.count,
        parameters=_parameters(args, client),
        save_as=args.save_as,
        request_id=args.request_id,
    )
    status = StatusLine(sys.stderr, enabled=not args.quiet)
    with _output(args.out) as out:
        summary = None
        for message in stream:
            for example in message.examples:
                out.write(example_line(example) + "\n")
            if message.HasField("summary"):
                summary = message.summary
            else:
                status.update(f"generated {message.generated_count}/{message.total_count}")
    status.close()
    if summary is not None:
        show(summary, output_format(args), sys.stderr)
    return 0


@contextlib.contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    if not path or path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


DATASET_COLUMNS: list[Column] = [
    ("DATASET_ID", field("dataset_id")),
    ("NAME", field("name")),
    ("EXAMPLES", field("example_count")),
    ("OUTPUTS", field("output_count")),
    (
        "SOURCE",
        field("source", then=lambda s: str(s or "").removeprefix("DATASET_SOURCE_").lower()),
    ),
    ("CREATED", field("create_time")),
]
EXAMPLE_COLUMNS: list[Column] = [
    ("INPUT", field("input")),
    ("EXPECTED_OUTPUT", field("expected_output")),
    ("FEEDBACK", field("feedback")),
]


def datasets(args: argparse.Namespace, client: AgentTrainingClient) -> int:
    """`agent-training datasets list|get|upload|export|delete`."""
    output = output_format(args)
    if args.action == "list":
        found: list[synthetic_pb2.Dataset] = []
        token = ""
        while True:
            page = client.list_datasets(page_token=token)
            found += page.datasets
            token = page.next_page_token
            if not token:
                break
        show_list(found, output, DATASET_COLUMNS)
    elif args.action == "get":
        show(client.get_dataset(resolve_dataset(client, args.dataset)), output)
    elif args.action == "upload":
        examples = reader(args)(args.file)
        show(client.upload_dataset(args.name, examples, description=args.description), output)
    elif args.action == "export":
        dataset_id = resolve_dataset(client, args.dataset)
        with _output(args.out) as out:
            if output == "table":
                rows = [
                    message_data(example.example)
                    for example in client.iter_dataset_examples(dataset_id)
                ]
                for line in table_lines(rows, EXAMPLE_COLUMNS):
                    out.write(line + "\n")
            else:
                for example in client.iter_dataset_examples(dataset_id):
                    out.write(example_line(example) + "\n")
    elif args.action == "delete":
        dataset_id = resolve_dataset(client, args.dataset)
        client.delete_dataset(dataset_id)
        show({"deleted": dataset_id}, output)
    return 0


def add_commands(commands: Any) -> None:
    """Add `generate` and `datasets` to the CLI."""
    gen = add_command(commands, "generate", "generate synthetic training examples as JSON lines")
    gen.description = (
        "Generate synthetic training examples as JSON lines (the shape `agent-training train`"
        " reads). --output formats the summary printed on standard error."
    )
    gen.add_argument("data_type", type=enum_value, choices=DATA_TYPES, help="what to generate")
    gen.add_argument("--count", type=int, required=True, help="how many examples")
    gen.add_argument("--topics", default="", help="comma-separated, e.g. billing,support")
    gen.add_argument("--difficulty", type=enum_value, choices=DIFFICULTIES, help="how hard")
    gen.add_argument(
        "--label", type=enum_value, choices=LABELS, help="what queries are labelled with"
    )
    gen.add_argument("--seed", type=int, help="the same seed gives the same examples")
    gen.add_argument("--grammar", default="", help="template grammar file (templates)")
    gen.add_argument("--source", default="", help="CSV/JSONL examples to reword or answer")
    add_column_flags(gen)
    gen.add_argument(
        "--dataset", default="", metavar="NAME_OR_ID", help="stored dataset to reword or answer"
    )
    gen.add_argument("--agent", default="", help="agent whose answers are logged (feedback_logs)")
    gen.add_argument("--target-agent", default="", help="mine examples this agent gets wrong")
    gen.add_argument(
        "--min-confidence", type=float, help="with --target-agent: keep answers below this"
    )
    gen.add_argument("--fallback", default="", help="label of out_of_scope examples")
    gen.add_argument(
        "--encoder-synonyms",
        action="store_true",
        help="paraphrases: also use synonyms the pretrained encoder finds (slower)",
    )
    gen.add_argument("--out", default="-", help="JSONL file (-: standard output)")
    gen.add_argument("--save-as", default="", help="also store them as a dataset of this name")
    gen.add_argument("--request-id", default="", help="idempotency key for safe retries")
    gen.add_argument("--quiet", action="store_true", help="no progress line")
    gen.set_defaults(handler=generate)

    sets = add_command(commands, "datasets", "stored datasets", output=None).add_subparsers(
        dest="action", required=True, metavar="COMMAND"
    )
    add_command(sets, "list", "list datasets", output="table").set_defaults(handler=datasets)
    for action, text, output in (
        ("get", "describe a dataset", "json"),
        ("delete", "delete a dataset", "table"),
    ):
        sub = add_command(sets, action, text, output=output)
        sub.add_argument("dataset", metavar="NAME_OR_ID")
        sub.set_defaults(handler=datasets)
    upload = add_command(sets, "upload", "store a CSV or JSONL file as a dataset")
    upload.add_argument("file", help="CSV, TSV or JSONL examples")
    add_column_flags(upload)
    upload.add_argument("--name", required=True, help="the dataset's name (unique)")
    upload.add_argument("--description", default="", help="what the data is")
    upload.set_defaults(handler=datasets)
    export = add_command(
        sets, "export", "write a dataset's examples: JSON lines (-o json) or a table"
    )
    export.add_argument("dataset", metavar="NAME_OR_ID")
    export.add_argument("--out", default="-", help="file to write (-: standard output)")
    export.set_defaults(handler=datasets)
