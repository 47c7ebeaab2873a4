"""Field checks shared by the api layer and the services: a violation collector and its rules.

A `Checker` collects the field violations of one request (or of the examples a service is about
to train on) and raises one InvalidArgument carrying all of them, so a caller fixes a request in
one round trip. The api layer's validators (api/validation.py) add the contract's own rules
(field limits, page tokens, enums); the examples' rules are in `example_checks`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from agent_training_server.errors import FieldViolation, InvalidArgument

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ID_RULE = "1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '-', starting with a letter or digit"
MAX_VIOLATIONS = 100
"""Violations listed in one error: a request with a million bad items gets a short answer."""
DETAILS_BUDGET = 3_000
"""Bytes of field violations listed in one error (see Checker.raise_if_any)."""
# C0 and C1 control characters and DEL, except tab, newline and carriage return: they have no
# place in a customer message or a label, and can rewrite a terminal or a log line when echoed.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class Checker:
    """Collects field violations of one request."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []
        self.unlisted = 0

    @property
    def full(self) -> bool:
        """Whether MAX_VIOLATIONS are listed: enough to act on, so a long scan may stop."""
        return len(self.violations) >= MAX_VIOLATIONS

    def add(self, field: str, description: str) -> None:
        """Record a violation (past MAX_VIOLATIONS, only count it)."""
        if self.full:
            self.unlisted += 1
            return
        self.violations.append(FieldViolation(field, description))

    def raise_if_any(self, hint: str | None = None) -> None:
        """Raise InvalidArgument listing the violations, if there are any.

        The error travels in trailing metadata, which gRPC caps (8 KiB by default; past it the
        client sees RESOURCE_EXHAUSTED instead of our error), so the listing is clipped to a
        budget and the rest only counted.
        """
        if not self.violations:
            return
        listed = _within_budget(self.violations)
        summary = "; ".join(f"{v.field}: {_clip(v.description, 120)}" for v in listed[:3])
        more = len(self.violations) + self.unlisted - min(3, len(listed))
        if more > 0:
            summary += f"; and {more} more"
        raise InvalidArgument(
            f"invalid request: {summary}",
            hint=hint or _hint_for(self.violations),
            violations=listed,
        )

    def resource_id(self, field: str, value: str, *, required: bool = True) -> None:
        """Check an id such as agent_id."""
        if not value:
            if required:
                self.add(field, f"is required: {ID_RULE}")
            return
        # fullmatch: with match, "$" would also accept a trailing newline.
        if not ID_PATTERN.fullmatch(value):
            shown = value if len(value) <= 80 else value[:77] + "..."
            self.add(field, f"{shown!r} is not a valid id: {ID_RULE}")

    def text(self, field: str, value: str, max_length: int, *, required: bool = False) -> None:
        """Check a free text's presence, length and characters."""
        if required and not value.strip():
            self.add(field, "is required and must not be blank")
        elif len(value) > max_length:
            self.add(field, f"has {len(value)} characters; at most {max_length} are allowed")
        elif control := CONTROL_CHARACTER.search(value):
            self.add(
                field,
                f"has the control character U+{ord(control.group()):04X} at position"
                f" {control.start()}; only tab, newline and carriage return are allowed",
            )

    def texts(self, field: str, values: Sequence[str], max_items: int, max_length: int) -> None:
        """Check a repeated text field: how many items, and each one."""
        if len(values) > max_items:
            self.add(field, f"has {len(values)} items; at most {max_items} are allowed")
            return
        for index, value in enumerate(values):
            self.text(f"{field}[{index}]", value, max_length)

    def number(
        self,
        field: str,
        value: float,
        *,
        low: float,
        high: float,
        low_open: bool = False,
    ) -> None:
        """Check that a number is finite and within [low, high] (or (low, high])."""
        if not math.isfinite(value):
            self.add(field, f"must be a finite number, got {value}")
            return
        too_low = value <= low if low_open else value < low
        if too_low or value > high:
            bracket = "(" if low_open else "["
            self.add(field, f"must be in {bracket}{low:g}, {high:g}], got {value:g}")


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def _within_budget(violations: Iterable[FieldViolation]) -> list[FieldViolation]:
    """The violations that fit DETAILS_BUDGET bytes, each description clipped."""
    listed: list[FieldViolation] = []
    used = 0
    for violation in violations:
        clipped = FieldViolation(_clip(violation.field, 100), _clip(violation.description, 300))
        used += len(clipped.field.encode()) + len(clipped.description.encode()) + 8
        if used > DETAILS_BUDGET and listed:
            break
        listed.append(clipped)
    return listed


def _hint_for(violations: Iterable[FieldViolation]) -> str:
    fields = sorted({v.field.split("[")[0].split(".")[0] for v in violations})
    return (
        f"Fix {', '.join(fields)} as described in the BadRequest field violations and send the"
        " request again; the contract's field comments give every rule."
    )
