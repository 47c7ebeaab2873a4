"""What ``agent-training`` prints: JSON with numbers as numbers, or tables with aligned columns."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

# A message's DESCRIPTOR is typed as protobuf's Python or C (upb) descriptor class; at run time
# the C one is an instance of descriptor.Descriptor, which is what the code below reads.

SIGNIFICANT_DIGITS = 6
"""Floats keep 6 significant digits: float32 noise (0.89500004) and 17-digit doubles go."""
_INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
"""A Timestamp as protobuf's JSON mapping writes it (RFC 3339, UTC)."""

Column = tuple[str, Callable[[dict[str, Any]], Any]]
"""A table column: its header and how to get its value from a row."""


def round_float(value: float) -> float | int:
    """``value`` with 6 significant digits (whole numbers of a million or more: an integer)."""
    if not math.isfinite(value):
        return value
    if abs(value) >= 10**SIGNIFICANT_DIGITS:
        return round(value)
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def message_data(message: Message) -> dict[str, Any]:
    """A message as JSON-ready data, with numbers as numbers.

    Proto field names, fields at their zero values included, 64-bit integers as numbers (not
    strings, as protobuf's JSON mapping writes them) and floats rounded by :func:`round_float`.
    """
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _fix(data, cast(Descriptor, message.DESCRIPTOR))


def _fix(data: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    # In the order of the .proto (MessageToDict puts the fields it did not skip first).
    fixed = {
        field.name: _fix_field(data[field.name], field)
        for field in descriptor.fields
        if field.name in data
    }
    fixed.update((name, value) for name, value in data.items() if name not in fixed)
    return fixed


def _fix_field(value: Any, field: FieldDescriptor) -> Any:
    if isinstance(value, list):
        return [_fix_value(item, field) for item in value]
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _fix_value(item, value_field) for key, item in value.items()}
    return _fix_value(value, field)


def _fix_value(value: Any, field: FieldDescriptor) -> Any:
    if field.type in _INTEGER_TYPES and isinstance(value, str):
        return int(value)
    if field.type in _FLOAT_TYPES and isinstance(value, int | float):
        return round_float(float(value))
    if isinstance(value, dict) and field.message_type is not None:
        if field.message_type.full_name.startswith("google.protobuf."):
            return value  # a Timestamp or Duration is already its JSON string
        return _fix(value, field.message_type)
    return value


def print_json(data: Any, stream: TextIO | None = None) -> None:
    """Print data as indented JSON."""
    print(json.dumps(data, indent=2, ensure_ascii=False), file=stream or sys.stdout)


def cell(value: Any) -> str:
    """How a value reads in a table cell."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{round_float(value):g}"
    if isinstance(value, str) and TIMESTAMP.match(value):
        return f"{value[:10]} {value[11:19]}Z"  # seconds are enough to read
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{key}={cell(item)}" for key, item in value.items())
    return str(value).replace("\n", " ")


def table_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> list[str]:
    """A header row and one aligned row per item (the last column is not padded)."""
    cells = [[header for header, _ in columns]]
    cells += [[cell(value(dict(row))) for _, value in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]


def print_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[Column]) -> None:
    """Print a table with a header row."""
    for line in table_lines(rows, columns):
        print(line)


def flatten(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested fields as dotted keys (``metrics.accuracy``); lists of objects get an index."""
    pairs: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            pairs += flatten(value, name + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                pairs += flatten(item, f"{name}[{index}].")
        else:
            pairs.append((name, value))
    return pairs


def fields_lines(data: Mapping[str, Any]) -> list[str]:
    """A key/value table of one object; empty fields are left out."""
    pairs = [(key, value) for key, value in flatten(data) if cell(value) != "-"]
    width = max((len(key) for key, _ in pairs), default=0)
    return [f"{key.ljust(width)}  {cell(value)}" for key, value in pairs]


def print_fields(data: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """Print one object as a key/value table."""
    for line in fields_lines(data):
        print(line, file=stream or sys.stdout)


def show(data: Any, output: str, stream: TextIO | None = None) -> None:
    """Print one object (a message or data) as JSON or as a key/value table."""
    if isinstance(data, Message):
        data = message_data(data)
    if output == "table":
        print_fields(data, stream)
    else:
        print_json(data, stream)


def show_list(
    items: Iterable[Message | Mapping[str, Any]], output: str, columns: Sequence[Column]
) -> None:
    """Print a list as a JSON array or as a table with ``columns``."""
    rows = [message_data(item) if isinstance(item, Message) else dict(item) for item in items]
    if output == "table":
        print_table(rows, columns)
    else:
        print_json(rows)


def enum_text(prefix: str) -> Callable[[Any], str]:
    """A column value that shows an enum name without its prefix: ``TRAINING_STATUS_X`` -> x."""

    def text(value: Any) -> str:
        return str(value).removeprefix(prefix).lower() if value else ""

    return text


def fixed(digits: int) -> Callable[[Any], str | None]:
    """A column value with ``digits`` decimals (accuracies: 3)."""

    def text(value: Any) -> str | None:
        return None if value is None else f"{value:.{digits}f}"

    return text


def field(*path: str, then: Callable[[Any], Any] | None = None) -> Callable[[dict], Any]:
    """A column value: the field at ``path`` of a row, optionally transformed."""

    def get(row: dict[str, Any]) -> Any:
        value: Any = row
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        return then(value) if then is not None else value

    return get
