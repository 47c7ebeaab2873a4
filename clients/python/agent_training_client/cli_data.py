"""The data commands of ``agent-training``: ``generate`` synthetic examples and ``datasets``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format

from agent_training.v1 import synthetic_pb2
from agent_training_client.client import AgentTrainingClient

DATA_TYPES = (
    "customer_queries",
    "conversations",
    "paraphrases",
    "out_of_scope",
    "feedback_logs",
    "templates",
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
    args: argparse.Namespace, read_examples: Any
) -> synthetic_pb2.SyntheticDataParameters:
    parameters = synthetic_pb2.SyntheticDataParameters(
        topics=[topic for topic in args.topics.split(",") if topic],
        agent_id=args.agent,
        dataset_id=args.dataset,
        target_agent_id=args.target_agent,
        fallback_output=args.fallback,
        encoder_synonyms=args.encoder_synonyms,
    )
    if args.difficulty:
        parameters.difficulty = synthetic_pb2.Difficulty.Value(
            f"DIFFICULTY_{args.difficulty.upper()}"
        )
    if args.label:
        parameters.label = synthetic_pb2.SyntheticLabel.Value(
            f"SYNTHETIC_LABEL_{args.label.upper()}"
        )
    if args.seed is not None:
        parameters.seed = args.seed
    if args.min_confidence is not None:
        parameters.min_confidence = args.min_confidence
    if args.grammar:
        parameters.grammar = Path(args.grammar).read_text(encoding="utf-8")
    if args.source:
        parameters.source_examples.extend(read_examples(Path(args.source)))
    return parameters


def generate(args: argparse.Namespace, client: AgentTrainingClient, read_examples: Any) -> int:
    """`agent-training generate TYPE --count N ...`: stream examples to JSONL."""
    data_type = synthetic_pb2.SyntheticDataType.Value(
        f"SYNTHETIC_DATA_TYPE_{args.data_type.upper()}"
    )
    stream = client.generate_synthetic_training_data(
        data_type=data_type,
        count=args.count,
        parameters=_parameters(args, read_examples),
        save_as=args.save_as,
        request_id=args.request_id,
    )
    with _output(args.out) as out:
        summary = None
        for message in stream:
            for example in message.examples:
                out.write(example_line(example) + "\n")
            if message.HasField("summary"):
                summary = message.summary
            elif not args.quiet:
                print(
                    f"\rgenerated {message.generated_count}/{message.total_count}",
                    end="",
                    file=sys.stderr,
                )
    if not args.quiet:
        print(file=sys.stderr)
    if summary is not None:
        print(
            json_format.MessageToJson(summary, preserving_proto_field_name=True, indent=2),
            file=sys.stderr,
        )
    return 0


@contextlib.contextmanager
def _output(path: str) -> Iterator[IO[str]]:
    if not path or path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


def datasets(args: argparse.Namespace, client: AgentTrainingClient, read_examples: Any) -> int:
    """`agent-training datasets list|get|upload|export|delete`."""
    show = lambda message: print(  # noqa: E731
        json_format.MessageToJson(message, preserving_proto_field_name=True, indent=2)
    )
    if args.action == "list":
        token = ""
        while True:
            page = client.list_datasets(page_token=token)
            for dataset in page.datasets:
                print(f"{dataset.dataset_id}  {dataset.example_count:>9}  {dataset.name}")
            token = page.next_page_token
            if not token:
                return 0
    if args.action == "get":
        show(client.get_dataset(args.dataset_id))
    elif args.action == "upload":
        show(
            client.upload_dataset(
                args.name, read_examples(Path(args.file)), description=args.description
            )
        )
    elif args.action == "export":
        with _output(args.out) as out:
            for example in client.iter_dataset_examples(args.dataset_id):
                out.write(example_line(example) + "\n")
    elif args.action == "delete":
        client.delete_dataset(args.dataset_id)
    return 0


def add_commands(commands: Any, handler: Any) -> None:
    """Add `generate` and `datasets` to the CLI; `handler(fn)` wraps fn(args, client, read)."""
    gen = commands.add_parser("generate", help="generate synthetic training examples (JSONL)")
    gen.add_argument("data_type", choices=DATA_TYPES)
    gen.add_argument("--count", type=int, required=True)
    gen.add_argument("--topics", default="", help="comma-separated, e.g. billing,support")
    gen.add_argument("--difficulty", choices=("easy", "medium", "hard"))
    gen.add_argument(
        "--label", choices=("intent", "response"), help="what queries are labelled with"
    )
    gen.add_argument("--seed", type=int)
    gen.add_argument("--grammar", default="", help="template grammar file (templates)")
    gen.add_argument("--source", default="", help="CSV/JSONL examples to reword or answer")
    gen.add_argument("--dataset", default="", help="stored dataset to reword or answer")
    gen.add_argument("--agent", default="", help="agent whose answers are logged (feedback_logs)")
    gen.add_argument("--target-agent", default="", help="mine examples this agent gets wrong")
    gen.add_argument("--min-confidence", type=float)
    gen.add_argument("--fallback", default="", help="label of out_of_scope examples")
    gen.add_argument(
        "--encoder-synonyms",
        action="store_true",
        help="paraphrases: also use synonyms the pretrained encoder finds (slower)",
    )
    gen.add_argument("--out", default="-", help="JSONL file (default: standard output)")
    gen.add_argument("--save-as", default="", help="also store them as a dataset of this name")
    gen.add_argument("--request-id", default="")
    gen.add_argument("--quiet", action="store_true")
    gen.set_defaults(handler=handler(generate))

    sets = commands.add_parser("datasets", help="stored datasets").add_subparsers(
        dest="action", required=True
    )
    sets.add_parser("list", help="list datasets").set_defaults(handler=handler(datasets))
    for action, text in (("get", "describe a dataset"), ("delete", "delete a dataset")):
        sub = sets.add_parser(action, help=text)
        sub.add_argument("dataset_id")
        sub.set_defaults(handler=handler(datasets))
    upload = sets.add_parser("upload", help="store a CSV or JSONL file as a dataset")
    upload.add_argument("file")
    upload.add_argument("--name", required=True)
    upload.add_argument("--description", default="")
    upload.set_defaults(handler=handler(datasets))
    export = sets.add_parser("export", help="write a dataset's examples as JSONL")
    export.add_argument("dataset_id")
    export.add_argument("--out", default="-")
    export.set_defaults(handler=handler(datasets))
