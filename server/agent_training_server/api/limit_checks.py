"""Walks a request message against the table of field limits (`field_limits`).

- `oversized` finds sizes over their limit. The call guard runs it on every request before the
  handler, so nothing unbounded reaches a handler or the store (an agent with 12 million
  disabled outputs once made every ListAgents of its tenant exceed the message limit).
- `out_of_range` finds numbers outside their range. Request validators run it, so a number out
  of range is reported together with the request's other problems, in one answer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain, compress
from operator import attrgetter, methodcaller
from typing import TYPE_CHECKING

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from agent_training_server.api.field_limits import (
    FIELD_LIMITS,
    Limit,
    Range,
    Size,
    describe_range,
    format_number,
    resolve,
)
from agent_training_server.config import ServerConfig

if TYPE_CHECKING:
    # What Message.DESCRIPTOR is typed as: the pure-Python class or the upb one (the same API).
    from google._upb._message import Descriptor as UpbDescriptor

    AnyDescriptor = Descriptor | UpbDescriptor

_STRING_TYPES = (FieldDescriptor.CPPTYPE_STRING,)
_NUMBER_TYPES = (
    FieldDescriptor.CPPTYPE_INT32,
    FieldDescriptor.CPPTYPE_INT64,
    FieldDescriptor.CPPTYPE_UINT32,
    FieldDescriptor.CPPTYPE_UINT64,
    FieldDescriptor.CPPTYPE_DOUBLE,
    FieldDescriptor.CPPTYPE_FLOAT,
)


_FLOAT_TYPES = (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT)


def is_number(field: FieldDescriptor) -> bool:
    """Whether a field holds integers or floating-point numbers (not enums or booleans)."""
    return field.cpp_type in _NUMBER_TYPES


def is_map(field: FieldDescriptor) -> bool:
    """Whether a field is a map."""
    return field.message_type is not None and field.message_type.GetOptions().map_entry


@dataclasses.dataclass(frozen=True)
class Oversize:
    """A field over its size limit."""

    field: str
    """Its path in the request, e.g. ``default_behavior.disabled_outputs``."""
    description: str
    """What is wrong, with the limit."""
    limit: str
    """The limit in words, e.g. ``at most 2000 items``."""


@dataclasses.dataclass(frozen=True)
class _Step:
    name: str
    field: FieldDescriptor
    limit: Limit | None


@functools.cache
def _steps(descriptor: Descriptor) -> tuple[_Step, ...]:
    return tuple(
        _Step(field.name, field, FIELD_LIMITS.get(field.full_name)) for field in descriptor.fields
    )


# What a size check does with a field.
_STRING, _STRINGS, _MESSAGE, _MESSAGES, _MAP, _ITEMS = range(6)


@dataclasses.dataclass(frozen=True)
class _SizeStep:
    name: str
    kind: int
    size: Size
    items: int | None
    chars: int | None
    total: int | None
    entry: Descriptor | None = None


def _size_steps(
    descriptor: AnyDescriptor, config: ServerConfig, plans: dict[str, tuple[_SizeStep, ...]]
) -> tuple[_SizeStep, ...]:
    """The size checks of a message type, bounds resolved (computed once per walk)."""
    plan = plans.get(descriptor.full_name)
    if plan is not None:
        return plan
    steps = []
    for step in _steps(descriptor):
        field = step.field
        size = step.limit if isinstance(step.limit, Size) else Size()
        if field.is_repeated:
            if is_map(field):
                kind = _MAP
            elif field.cpp_type in _STRING_TYPES:
                kind = _STRINGS
            elif field.message_type is not None:
                kind = _MESSAGES
            else:
                kind = _ITEMS
        elif field.cpp_type in _STRING_TYPES:
            kind = _STRING
        elif field.message_type is not None:
            kind = _MESSAGE
        else:
            continue  # a number, enum or bool: no size
        steps.append(
            _SizeStep(
                step.name,
                kind,
                size,
                None if size.items is None else int(resolve(size.items, config)),
                None if size.chars is None else int(resolve(size.chars, config)),
                None if size.total_chars is None else int(resolve(size.total_chars, config)),
                field.message_type if kind == _MAP else None,
            )
        )
    plans[descriptor.full_name] = plan = tuple(steps)
    return plan


def oversized(message: Message, config: ServerConfig, prefix: str = "") -> Iterator[Oversize]:
    """Every field of `message` (and the messages in it) over its size limit.

    A repeated field with too many items is reported once, and its items are not looked at.
    """
    return _oversized(message, config, prefix, {})


def _oversized(
    message: Message, config: ServerConfig, prefix: str, plans: dict
) -> Iterator[Oversize]:
    # Kept flat and inline: it runs for each of up to 200,000 examples of a request.
    for step in _size_steps(message.DESCRIPTOR, config, plans):
        kind, chars, size = step.kind, step.chars, step.size
        if kind == _STRING:
            value = getattr(message, step.name)
            if chars is not None and len(value) > chars:
                yield _long(prefix + step.name, value, chars, size)
            continue
        if kind == _MESSAGE:
            if message.HasField(step.name):
                yield from _oversized(
                    getattr(message, step.name), config, f"{prefix}{step.name}.", plans
                )
            continue
        values = getattr(message, step.name)
        if not values:
            continue
        if step.items is not None and len(values) > step.items:
            unit = "entries" if kind == _MAP else "items"
            yield Oversize(
                prefix + step.name,
                _with_note(f"has {len(values)} {unit}; at most {step.items} are allowed", size),
                f"at most {step.items} {unit}",
            )
        elif kind == _STRINGS:
            if chars is not None and max(map(len, values)) > chars:
                for index, value in enumerate(values):
                    if len(value) > chars:
                        yield _long(f"{prefix}{step.name}[{index}]", value, chars, size)
            if step.total is not None:
                total = sum(map(len, values))
                if total > step.total:
                    yield Oversize(
                        prefix + step.name,
                        _with_note(
                            f"has {total} characters in all; at most {step.total} are allowed",
                            size,
                        ),
                        f"at most {step.total} characters in all",
                    )
        elif kind == _MESSAGES and not _all_fit(values, config, plans):
            for index, item in enumerate(values):
                yield from _oversized(item, config, f"{prefix}{step.name}[{index}].", plans)
        elif kind == _MAP and step.entry is not None:
            yield from _oversized_map(step.entry, values, config, prefix + step.name, plans)


def _all_fit(messages: Sequence[Message], config: ServerConfig, plans: dict) -> bool:
    """Whether messages of one type are all within their sizes, checked a field at a time.

    A quick pass for the common case: map, attrgetter and max iterate in C, so 200,000 examples
    take a few milliseconds per field. Only when it fails does the walk look for the paths.
    """
    if not messages:
        return True
    for step in _size_steps(messages[0].DESCRIPTOR, config, plans):
        kind, chars, items = step.kind, step.chars, step.items
        column = list(map(attrgetter(step.name), messages))
        if kind == _STRING:
            if chars is not None and max(map(len, column)) > chars:
                return False
        elif kind == _MESSAGE:
            present = methodcaller("HasField", step.name)
            if not _all_fit(list(compress(column, map(present, messages))), config, plans):
                return False
        elif items is not None and max(map(len, column)) > items:
            return False
        elif kind == _STRINGS:
            flat = list(chain.from_iterable(column))
            if chars is not None and flat and max(map(len, flat)) > chars:
                return False
            if (
                step.total is not None
                and max(sum(map(len, value)) for value in column) > step.total
            ):
                return False
        elif kind == _MESSAGES:
            if not _all_fit(list(chain.from_iterable(column)), config, plans):
                return False
        elif kind == _MAP and any(True for _ in _oversized_maps(step, column, config, plans)):
            return False
    return True


def _oversized_maps(
    step: _SizeStep, column: list[Mapping], config: ServerConfig, plans: dict
) -> Iterator[Oversize]:
    if step.entry is None:
        return
    for values in column:
        yield from _oversized_map(step.entry, values, config, step.name, plans)


def _oversized_map(
    entry: Descriptor, values: Mapping, config: ServerConfig, path: str, plans: dict
) -> Iterator[Oversize]:
    key_step, value_step = _steps(entry)
    key_size, value_size = _size(key_step), _size(value_step)
    key_chars = None if key_size.chars is None else int(resolve(key_size.chars, config))
    value_chars = None if value_size.chars is None else int(resolve(value_size.chars, config))
    for key, value in values.items():
        shown = f"{path}[{key[:40]!r}]" if isinstance(key, str) else f"{path}[{key}]"
        if isinstance(key, str) and key_chars is not None and len(key) > key_chars:
            problem = _long(shown, key, key_chars, key_size)
            described, limit = f"its key {problem.description}", f"keys of {problem.limit}"
            yield dataclasses.replace(problem, description=described, limit=limit)
        if isinstance(value, str | bytes):
            if value_chars is not None and len(value) > value_chars:
                yield _long(shown, value, value_chars, value_size)
        elif isinstance(value, Message):
            yield from _oversized(value, config, f"{shown}.", plans)


def _size(step: _Step) -> Size:
    return step.limit if isinstance(step.limit, Size) else Size()


def _long(path: str, value: str | bytes, most: int, size: Size) -> Oversize:
    unit = "bytes" if isinstance(value, bytes) else "characters"
    return Oversize(
        path,
        _with_note(f"has {len(value)} {unit}; at most {most} are allowed", size),
        f"at most {most} {unit}",
    )


def _with_note(text: str, size: Size) -> str:
    return f"{text} ({size.note})" if size.note else text


@functools.cache
def _has_numbers(descriptor: Descriptor) -> bool:
    """Whether a message type holds a number with a Range, itself or in a nested message."""
    return any(
        isinstance(FIELD_LIMITS.get(field.full_name), Range)
        or (
            field.message_type is not None
            and field.message_type is not descriptor
            and _has_numbers(field.message_type)
        )
        for field in descriptor.fields
    )


def out_of_range(
    message: Message, config: ServerConfig, prefix: str = ""
) -> Iterator[tuple[str, str]]:
    """(field path, description) of every number in `message` outside its Range.

    Fields with presence are checked when set; plain numbers always (their 0 must be in range or
    mean the default, as the table says).
    """
    for step in _steps(message.DESCRIPTOR):
        field, path = step.field, prefix + step.name
        if isinstance(step.limit, Range):
            if field.is_repeated:
                for index, value in enumerate(getattr(message, step.name)):
                    problem = outside(value, step.limit, config)
                    if problem:
                        yield f"{path}[{index}]", problem
            elif not field.has_presence or message.HasField(step.name):
                problem = outside(getattr(message, step.name), step.limit, config)
                if problem:
                    yield path, problem
        elif field.message_type is None or not _has_numbers(field.message_type):
            continue
        elif is_map(field):
            _key, value_step = _steps(field.message_type)
            for key, value in getattr(message, step.name).items():
                shown = f"{path}[{key[:40]!r}]" if isinstance(key, str) else f"{path}[{key}]"
                if isinstance(value_step.limit, Range):
                    problem = outside(value, value_step.limit, config)
                    if problem:
                        yield shown, problem
                elif isinstance(value, Message):
                    yield from out_of_range(value, config, f"{shown}.")
        elif field.is_repeated:
            items = getattr(message, step.name)
            if not _all_in_range(items, config):
                for index, item in enumerate(items):
                    yield from out_of_range(item, config, f"{path}[{index}].")
        elif message.HasField(step.name):
            yield from out_of_range(getattr(message, step.name), config, f"{path}.")


def _all_in_range(messages: Sequence[Message], config: ServerConfig) -> bool:
    """Whether messages of one type hold no number out of range, checked a field at a time."""
    if not messages:
        return True
    for step in _steps(messages[0].DESCRIPTOR):
        field = step.field
        if isinstance(step.limit, Range):
            if field.is_repeated:
                column = list(chain.from_iterable(map(attrgetter(step.name), messages)))
            elif field.has_presence:
                present = map(methodcaller("HasField", step.name), messages)
                column = list(map(attrgetter(step.name), compress(messages, present)))
            else:
                column = list(map(attrgetter(step.name), messages))
            if column and (
                outside(min(column), step.limit, config)
                or outside(max(column), step.limit, config)
                or (field.cpp_type in _FLOAT_TYPES and not all(map(math.isfinite, column)))
            ):
                return False
        elif field.message_type is not None and _has_numbers(field.message_type):
            if is_map(field) or field.is_repeated:
                return False  # not in any request's repeated messages: let the walk look
            present = map(methodcaller("HasField", step.name), messages)
            column = list(map(attrgetter(step.name), compress(messages, present)))
            if not _all_in_range(column, config):
                return False
    return True


def outside(value: float, limit: Range, config: ServerConfig) -> str:
    """Why `value` is outside `limit`, as a field violation says it; empty when it is inside."""
    low, high = resolve(limit.low, config), resolve(limit.high, config)
    note = f" ({limit.note})" if limit.note else ""
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number in {describe_range(limit, config)}, got {value}{note}"
    too_low = value <= low if limit.low_open else value < low
    if too_low or value > high:
        return f"must be in {describe_range(limit, config)}, got {format_number(value)}{note}"
    return ""


def limit_hint(violations: list[Oversize]) -> str:
    """The error's hint: the limits the request went over, and where every limit is listed."""
    named = "; ".join(f"{v.field} takes {v.limit}" for v in violations[:3])
    more = " (and more, listed in the field violations)" if len(violations) > 3 else ""
    return (
        f"Send less: {named}{more}. Every field's limit is in the contract's comments and"
        " docs/limits.md."
    )
