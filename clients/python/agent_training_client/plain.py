"""Conversions between the contract's messages and the seed's plain dicts.

The seed's shape: snake_case field names, enums as short lowercase strings ("supervised", not
TRAINING_TYPE_SUPERVISED), 64-bit integers as numbers, timestamps as RFC 3339 strings, every field
present with its default except unset messages and unset optional fields. The TypeScript client
(clients/node/src/plain.ts) follows the same rules, so both return equal dicts.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from agent_training_client.errors import AgentTrainingError

# A message's DESCRIPTOR is typed as protobuf's Python or C (upb) descriptor class; at run time
# the C one is an instance of descriptor.Descriptor, which is what the code below reads.

M = TypeVar("M", bound=Message)

_INT64_TYPES = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def enum_prefix(descriptor: EnumDescriptor) -> str:
    """``TrainingStatus`` -> ``TRAINING_STATUS_``: the prefix protobuf style puts on every value."""
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", descriptor.name).upper() + "_"


def _short_enum(descriptor: EnumDescriptor, value: Any) -> Any:
    prefix = enum_prefix(descriptor)
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix) :].lower()
    return value


def _full_enum(descriptor: EnumDescriptor, value: Any, path: str) -> Any:
    if not isinstance(value, str):
        return value
    prefix = enum_prefix(descriptor)
    upper = value.upper()
    full = upper if upper.startswith(prefix) else prefix + upper
    if full in descriptor.values_by_name:
        return full
    allowed = ", ".join(v.name[len(prefix) :].lower() for v in descriptor.values[1:])
    raise invalid_argument(f"{path}: '{value}' is not one of {allowed}")


def invalid_argument(message: str) -> AgentTrainingError:
    """A request refused on this side, before it was sent, in the seed's error shape."""
    return AgentTrainingError(
        code="INVALID_ARGUMENT",
        message=message,
        hint="Use the seed's field names and values; docs/api.md lists them for each function.",
        retryable=False,
        status_code=grpc.StatusCode.INVALID_ARGUMENT,
    )


def _convert_single(field: FieldDescriptor, value: Any, outgoing: bool, path: str) -> Any:
    if field.enum_type is not None:
        if outgoing:
            return _short_enum(field.enum_type, value)
        return _full_enum(field.enum_type, value, path)
    if field.message_type is not None:
        if field.message_type.full_name.startswith("google.protobuf."):
            return value
        return _convert_object(field.message_type, value, outgoing, path)
    if outgoing and field.type in _INT64_TYPES:
        return int(value)
    return value


def _convert_field(field: FieldDescriptor, value: Any, outgoing: bool, path: str) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        if not isinstance(value, dict):
            return value
        value_field = field.message_type.fields_by_name["value"]
        return {
            key: _convert_single(value_field, item, outgoing, f"{path}.{key}")
            for key, item in value.items()
        }
    if field.is_repeated:
        if not isinstance(value, list):
            return value
        return [
            _convert_single(field, item, outgoing, f"{path}[{index}]")
            for index, item in enumerate(value)
        ]
    return _convert_single(field, value, outgoing, path)


def _convert_object(descriptor: Descriptor, value: Any, outgoing: bool, path: str) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {}
    for key, item in value.items():
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        child = f"{path}.{key}" if path else key
        converted[key] = _convert_field(field, item, outgoing, child) if field else item
    return converted


def to_plain(message: Message) -> dict[str, Any]:
    """A message as a plain dict: every field by its proto name, defaults included."""
    as_json = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return _convert_object(cast(Descriptor, message.DESCRIPTOR), as_json, True, "")


def from_plain(message_type: type[M], plain: dict[str, Any]) -> M:
    """A plain dict in the seed's shape as a message; unknown fields and values are refused."""
    as_json = _convert_object(cast(Descriptor, message_type.DESCRIPTOR), plain, False, "")
    try:
        return json_format.ParseDict(as_json, message_type())
    except json_format.ParseError as error:
        raise invalid_argument(str(error)) from None
