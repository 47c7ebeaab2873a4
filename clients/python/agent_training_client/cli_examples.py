"""Reading training examples from CSV or JSONL files: the one reader of every command.

Columns are found by name (``input`` or ``text`` for the text, ``expected_output``, ``label``,
``category``, ``intent`` or ``output`` for the label, ``feedback`` and ``propensity`` when there)
or named with ``--text-column`` / ``--label-column``. A CSV's delimiter (comma, semicolon, tab)
is sniffed. Problems come back as one :class:`AgentTrainingError` that names the file, what was
found and what was expected.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import difflib
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from agent_training.v1 import training_pb2
from agent_training_client.errors import AgentTrainingError

TEXT_COLUMNS = ("input", "text")
LABEL_COLUMNS = ("expected_output", "label", "category", "intent", "output")
DELIMITERS = ",;\t"
SNIFF_BYTES = 64 * 1024
JSONL_SUFFIXES = (".jsonl", ".ndjson")
MAX_LINES_NAMED = 5
"""How many line numbers an error about bad rows names."""


@dataclasses.dataclass(frozen=True)
class Columns:
    """Which columns hold the text and the label; None: found by name."""

    text: str | None = None
    """The column of the input text (``--text-column``)."""
    label: str | None = None
    """The column of the expected output (``--label-column``)."""


def add_column_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--text-column`` and ``--label-column`` to a command that reads examples."""
    parser.add_argument(
        "--text-column",
        metavar="NAME",
        help=f"column (or JSONL key) of the input text (default: the first of"
        f" {', '.join(TEXT_COLUMNS)})",
    )
    parser.add_argument(
        "--label-column",
        metavar="NAME",
        help=f"column (or JSONL key) of the expected output (default: the first of"
        f" {', '.join(LABEL_COLUMNS)})",
    )


def columns_of(args: argparse.Namespace) -> Columns:
    """The columns named on the command line."""
    return Columns(getattr(args, "text_column", None), getattr(args, "label_column", None))


def reader(args: argparse.Namespace) -> Callable[[str], list[training_pb2.TrainingExample]]:
    """``read_examples`` with the command line's columns."""
    columns = columns_of(args)
    return lambda path: read_examples(path, columns)


def file_error(code: str, message: str, hint: str) -> AgentTrainingError:
    """An error the CLI finds itself, before any call (no trace_id)."""
    return AgentTrainingError(code=code, message=message, hint=hint)


def open_text(path: str | Path, what: str = "file") -> str:
    """The whole text of a UTF-8 file, or an error that names the problem."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise _not_found(path, what) from None
    except IsADirectoryError:
        raise file_error(
            "FILE_UNREADABLE", f"{path}: is a folder, not a {what}", f"Name a {what} in it."
        ) from None
    except PermissionError:
        raise file_error(
            "FILE_UNREADABLE",
            f"{path}: permission denied",
            "Make the file readable by this user, or copy it somewhere readable.",
        ) from None
    except UnicodeDecodeError as error:
        raise file_error(
            "FILE_UNREADABLE",
            f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset"
            f" {error.start})",
            "Save the file as UTF-8 (spreadsheets: CSV UTF-8).",
        ) from None


def _not_found(path: Path, what: str) -> AgentTrainingError:
    hint = "Check the path (relative paths start in the current folder)."
    try:
        names = [entry.name for entry in os.scandir(path.parent) if entry.is_file()]
    except OSError:
        names = []
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    if close:
        hint = f"Did you mean {path.with_name(close[0])}? {hint}"
    return file_error("FILE_NOT_FOUND", f"{path}: no such {what}", hint)


def read_examples(
    path: str | Path, columns: Columns = Columns()
) -> list[training_pb2.TrainingExample]:
    """Read examples from JSONL (``.jsonl``, ``.ndjson``) or CSV/TSV (any other name).

    Raises:
        AgentTrainingError: the file is missing or unreadable, no text or label column is found,
            or rows lack a text or a label; the message names the file and what it found.
    """
    path = Path(path)
    text = open_text(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        records = list(_jsonl_records(path, text))
    else:
        records = list(_csv_records(path, text))
    if not records:
        raise file_error(
            "NO_EXAMPLES",
            f"{path}: no examples",
            "Give one example per line: a CSV with a header row (text,label) or JSON lines.",
        )
    keys: list[str] = []
    for _line, record in records[:100]:  # JSON lines may differ in their keys
        keys += [key for key in record if key not in keys]
    text_key = _column(path, keys, columns.text, TEXT_COLUMNS, "text", "--text-column")
    label_key = _column(path, keys, columns.label, LABEL_COLUMNS, "label", "--label-column")
    examples = [_example(record, text_key, label_key) for _line, record in records]
    _check_filled(path, records, examples, text_key, label_key)
    return examples


def _column(
    path: Path,
    keys: Sequence[str],
    named: str | None,
    known: Sequence[str],
    what: str,
    flag: str,
) -> str:
    by_name = {key.strip().lower(): key for key in keys}
    found = ", ".join(keys) or "none"
    if named is not None:
        key = by_name.get(named.strip().lower())
        if key is None:
            raise file_error(
                "COLUMN_NOT_FOUND",
                f"{path}: no column {named!r} ({flag}); its columns are {found}",
                f"Pass {flag} one of: {found}.",
            )
        return key
    for name in known:
        if name in by_name:
            return by_name[name]
    raise file_error(
        "COLUMN_NOT_FOUND",
        f"{path}: no {what} column among {found}; expected one of {', '.join(known)}"
        f" (or pass {flag})",
        f"Rename the column, or name it: {flag} NAME.",
    )


def _csv_records(path: Path, text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    delimiter = sniff_delimiter(path, text)
    rows = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in rows:
            values = {key: value for key, value in row.items() if key is not None}
            if any((value or "").strip() for value in values.values()):
                yield rows.line_num, values
    except csv.Error as error:
        raise file_error(
            "FILE_UNREADABLE",
            f"{path} line {rows.line_num}: {error}",
            "Check the quoting on that line.",
        ) from None


def sniff_delimiter(path: Path, text: str) -> str:
    """The delimiter of a CSV: sniffed on a sample, checked against the header row."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    sample = text[:SNIFF_BYTES]
    header = sample.split("\n", 1)[0]
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        delimiter = ","
    if delimiter not in header:  # the sniffer guessed from the texts: trust the header
        counts = {candidate: header.count(candidate) for candidate in DELIMITERS}
        best = max(counts, key=lambda candidate: counts[candidate])
        delimiter = best if counts[best] else ","
    return delimiter


def _jsonl_records(path: Path, text: str) -> Iterable[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise file_error(
                "FILE_UNREADABLE",
                f"{path} line {number}: not JSON ({error.msg} at column {error.colno})",
                'Write one JSON object per line, e.g. {"input": "...", "expected_output": "..."}.',
            ) from None
        if not isinstance(record, dict):
            raise file_error(
                "FILE_UNREADABLE",
                f"{path} line {number}: a JSON {type(record).__name__}, not an object",
                'Write one JSON object per line, e.g. {"input": "...", "expected_output": "..."}.',
            )
        yield number, record


def _example(record: dict[str, Any], text_key: str, label_key: str) -> training_pb2.TrainingExample:
    example = training_pb2.TrainingExample(
        input=_text(record.get(text_key)),
        expected_output=_text(record.get(label_key)),
        feedback=_text(record.get("feedback")),
    )
    context = record.get("context")
    if isinstance(context, list):
        example.context.extend(_text(turn) for turn in context)
    propensity = record.get("propensity")
    if propensity not in (None, ""):
        with contextlib.suppress(TypeError, ValueError):  # the server names a bad value
            example.propensity = float(propensity)
    return example


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else str(value)


def _check_filled(
    path: Path,
    records: list[tuple[int, dict[str, Any]]],
    examples: list[training_pb2.TrainingExample],
    text_key: str,
    label_key: str,
) -> None:
    for name, key, empty in (
        ("text", text_key, [e.input == "" for e in examples]),
        ("label", label_key, [e.expected_output == "" for e in examples]),
    ):
        lines = [line for (line, _), missing in zip(records, empty, strict=True) if missing]
        if lines:
            shown = ", ".join(str(line) for line in lines[:MAX_LINES_NAMED])
            left = len(lines) - MAX_LINES_NAMED
            more = f" and {left} more" if left > 0 else ""
            raise file_error(
                "EXAMPLES_INCOMPLETE",
                f"{path}: {len(lines)} of {len(records)} examples have no {name}"
                f" ({key!r} is empty on line {shown}{more})",
                f"Fill in or remove those lines, or name another {name} column (--{name}-column).",
            )
