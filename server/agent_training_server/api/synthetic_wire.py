"""Generated chunks encoded straight to protobuf bytes, for streaming at full speed.

Building two messages per example (a TrainingExample inside a SyntheticExample) costs several
microseconds in Python, more than generating the example. Here a chunk is written in the wire
format directly: every field but `input` is the same for all examples of one intent, so its
bytes are made once and reused; the chunk message is then parsed from those bytes in one C call.
The bytes are exactly what the message classes write (tests/synthetic compares them).

Wire format reminders: a field's tag is `(number << 3) | wire type`; strings and messages are
wire type 2 (a varint length, then the bytes), enums and ints wire type 0 (a varint), doubles
wire type 1 (8 bytes, little-endian). proto3 leaves out empty strings and zero numbers, but
writes an `optional` field whenever it is set, and a repeated string's every entry.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from agent_training.v1 import service_pb2
from agent_training_server.synthetic.sources import Sample

# Tags (field number << 3 | wire type) of the fields written here.
_FIELD_1_BYTES = b"\x0a"  # TrainingExample.input, SyntheticExample.example, Response.examples
_FIELD_2_BYTES = b"\x12"  # TrainingExample.expected_output, SyntheticExample.topic
_FIELD_3_BYTES = b"\x1a"  # TrainingExample.feedback, SyntheticExample.intent
_FIELD_4_BYTES = b"\x22"  # TrainingExample.context
_FIELD_4_VARINT = b"\x20"  # SyntheticExample.difficulty
_FIELD_5_BYTES = b"\x2a"  # SyntheticExample.generator
_FIELD_5_DOUBLE = b"\x29"  # TrainingExample.propensity

_SMALL_VARINTS = tuple(
    bytes([value]) if value < 0x80 else bytes([value & 0x7F | 0x80, value >> 7])
    for value in range(1 << 14)
)
"""Varints of 0 to 16,383, the lengths of nearly every field and example."""


def varint(value: int) -> bytes:
    """The base-128 varint of a non-negative int."""
    if value < 1 << 14:
        return _SMALL_VARINTS[value]
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string_field(tag: bytes, text: str) -> bytes:
    """A string field, or nothing for an empty string (proto3's default)."""
    if not text:
        return b""
    encoded = text.encode()
    return tag + varint(len(encoded)) + encoded


class ChunkEncoder:
    """Writes chunks of Samples as GenerateSyntheticTrainingDataResponse messages."""

    def __init__(self, difficulty: int, generator: str) -> None:
        self._metadata_tail = (_FIELD_4_VARINT + varint(difficulty) if difficulty else b"") + (
            _string_field(_FIELD_5_BYTES, generator)
        )
        self._tails: dict[tuple, tuple[bytes, bytes]] = {}

    def examples_bytes(self, samples: Sequence[Sample]) -> bytes:
        """The `examples` field of a response holding `samples`, as wire bytes."""
        parts = []
        tails = self._tails
        for sample in samples:
            # Everything but the input is the same for a whole intent, except a conversation's
            # context: those tails are made each time, so the cache stays small.
            key = sample[1:]
            tail = tails.get(key)
            if tail is None:
                tail = self._tail(sample)
                if not sample.context:
                    tails[key] = tail
            example_tail, metadata = tail
            text = sample.input.encode()
            example = _FIELD_1_BYTES + varint(len(text)) + text + example_tail
            wrapped = _FIELD_1_BYTES + varint(len(example)) + example + metadata
            parts.append(_FIELD_1_BYTES + varint(len(wrapped)) + wrapped)
        return b"".join(parts)

    def response(
        self, samples: Sequence[Sample], generated_count: int, total_count: int
    ) -> service_pb2.GenerateSyntheticTrainingDataResponse:
        """The chunk message: `samples` with the running and total counts."""
        message = service_pb2.GenerateSyntheticTrainingDataResponse.FromString(
            self.examples_bytes(samples)
        )
        message.generated_count = generated_count
        message.total_count = total_count
        return message

    def _tail(self, sample: Sample) -> tuple[bytes, bytes]:
        """The TrainingExample's fields after `input`, and the SyntheticExample's after it."""
        example_tail = _string_field(_FIELD_2_BYTES, sample.label) + _string_field(
            _FIELD_3_BYTES, sample.feedback
        )
        for turn in sample.context:
            encoded = turn.encode()
            example_tail += _FIELD_4_BYTES + varint(len(encoded)) + encoded
        if sample.propensity is not None:
            example_tail += _FIELD_5_DOUBLE + struct.pack("<d", sample.propensity)
        metadata = (
            _string_field(_FIELD_2_BYTES, sample.topic)
            + _string_field(_FIELD_3_BYTES, sample.intent)
            + self._metadata_tail
        )
        return example_tail, metadata
