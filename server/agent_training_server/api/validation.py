"""Request validation: every field checked, every problem reported at once with how to fix it.

Validators collect field violations and raise one InvalidArgument carrying all of them, so a
caller fixes a request in one round trip. Nothing is stored before validation passes.

The sizes and ranges themselves live in one table (`field_limits`): the call guard refuses a
request with a field over its size (`check_sizes`) before the handler runs, and each validator
checks the request's numbers against their ranges (`Checker.ranges`) with its other rules.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

from agent_training.v1 import agents_pb2, service_pb2, training_pb2
from agent_training_server.api import limit_checks
from agent_training_server.api.field_limits import (
    MAX_BEHAVIOR_FALLBACK,
    MAX_DESCRIPTION,
    MAX_DISPLAY_NAME,
    MAX_METRIC_NAME,
    MAX_NUM_WORKERS,
    MAX_REQUEST_ID,
    PAGE_SIZE,
)
from agent_training_server.config import ServerConfig
from agent_training_server.errors import FieldViolation, InvalidArgument

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ID_RULE = "1 to 64 characters from A-Z, a-z, 0-9, '_', '.', '-', starting with a letter or digit"
DEFAULT_PAGE_SIZE = 50
FEEDBACK_WORDS = ("correct", "incorrect")
FEW_SHOT_MAX_PER_OUTPUT = 20
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

    def add(self, field: str, description: str) -> None:
        """Record a violation (past MAX_VIOLATIONS, only count it)."""
        if len(self.violations) >= MAX_VIOLATIONS:
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

    def metric_map(
        self,
        field: str,
        values: Mapping[str, float],
        bounds: tuple[float, float] | None = None,
    ) -> None:
        """Check a map of metric names to numbers: names and, with `bounds`, values.

        Its size was checked before the handler ran (field_limits).
        """
        for name, value in values.items():
            shown = f"{field}[{name[:40]!r}]"
            if not name or len(name) > MAX_METRIC_NAME or CONTROL_CHARACTER.search(name):
                self.add(shown, f"names are 1 to {MAX_METRIC_NAME} printable characters")
            if bounds is not None:
                self.number(shown, value, low=bounds[0], high=bounds[1])

    def request_id(self, value: str) -> None:
        """Check an optional idempotency key."""
        if len(value) > MAX_REQUEST_ID or (value and not value.isprintable()):
            self.add("request_id", f"must be at most {MAX_REQUEST_ID} printable characters")

    def enum(
        self, field: str, value: int, wrapper: EnumTypeWrapper, *, allow_unspecified: bool = True
    ) -> None:
        """Check that an enum value is one the contract defines."""
        # EnumTypeWrapper is not a dict: keys() is its only way to list names.
        all_names = wrapper.keys()
        names = [name for name in all_names if not name.endswith("_UNSPECIFIED")]
        if value not in wrapper.values():
            self.add(field, f"unknown value {value}; use one of {', '.join(names)}")
        elif value == 0 and not allow_unspecified:
            self.add(field, f"is required; use one of {', '.join(names)}")

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

    def ranges(self, message: Message, config: ServerConfig, prefix: str = "") -> None:
        """Check every number of a request message against its range in field_limits."""
        for field, description in limit_checks.out_of_range(message, config, prefix):
            self.add(field, description)

    def page(self, page_size: int, page_token: str, config: ServerConfig) -> dict[str, Any]:
        """Check page_size and decode page_token; return the decoded token (empty for page 1)."""
        problem = limit_checks.outside(page_size, PAGE_SIZE, config)
        if problem:
            self.add("page_size", problem)
        if not page_token:
            return {}
        try:
            return decode_page_token(page_token)
        except ValueError:
            self.add("page_token", "is not a token returned by this list call")
            return {}


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 3] + "..."


def _within_budget(violations: Iterable[FieldViolation]) -> list[FieldViolation]:
    """The violations that fit DETAILS_BUDGET bytes, each description clipped."""
    listed, used = [], 0
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


def check_sizes(message: Message, config: ServerConfig, *, with_ranges: bool = False) -> None:
    """Refuse a message with a field over its size limit (see field_limits).

    The call guard runs it on every request before the handler. `with_ranges` also checks its
    numbers, for messages no validator sees whole (the chunks of an upload).
    """
    checker = Checker()
    found = []
    for oversize in limit_checks.oversized(message, config):
        checker.add(oversize.field, oversize.description)
        if len(found) < 4:
            found.append(oversize)
    if with_ranges:
        checker.ranges(message, config)
    hint = limit_checks.limit_hint(found) if found else None
    checker.raise_if_any(hint)


def page_size_or_default(page_size: int) -> int:
    """Return the page size to use (0 means the default)."""
    return page_size or DEFAULT_PAGE_SIZE


def encode_page_token(position: dict[str, Any]) -> str:
    """Return an opaque token for a listing position."""
    raw = json.dumps(position, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> dict[str, Any]:
    """Decode a token made by encode_page_token. Raises ValueError when it is not one."""
    try:
        padded = token + "=" * (-len(token) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise ValueError("bad page token") from error
    if not isinstance(value, dict):
        raise ValueError("bad page token")
    return value


# Requests -------------------------------------------------------------------------------------


def check_behavior(checker: Checker, prefix: str, behavior: agents_pb2.BehaviorSettings) -> None:
    """Check behaviour settings' texts (their numbers are checked by Checker.ranges)."""
    checker.text(f"{prefix}.fallback_output", behavior.fallback_output, MAX_BEHAVIOR_FALLBACK)
    for index, output in enumerate(behavior.disabled_outputs):
        # Their sizes were checked before the handler ran; here, their characters.
        checker.text(f"{prefix}.disabled_outputs[{index}]", output, len(output))
        if len(checker.violations) >= MAX_VIOLATIONS:
            return


def check_create_agent(
    request: service_pb2.CreateAgentRequest, server: ServerConfig | None = None
) -> None:
    """Validate CreateAgent (sizes were checked before: field_limits)."""
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id, required=False)
    checker.text("display_name", request.display_name, MAX_DISPLAY_NAME)
    checker.text("description", request.description, MAX_DESCRIPTION)
    for key, value in request.labels.items():
        if not key or CONTROL_CHARACTER.search(key) or CONTROL_CHARACTER.search(value):
            checker.add(
                f"labels[{key[:40]!r}]",
                "keys are 1 to 64 and values at most 64 printable characters",
            )
    check_behavior(checker, "default_behavior", request.default_behavior)
    checker.request_id(request.request_id)
    # The ranges of CreateAgentRequest's numbers name no setting: the defaults resolve them.
    checker.ranges(request, server or ServerConfig())
    checker.raise_if_any()


def check_agent_id_only(agent_id: str) -> None:
    """Validate a request whose only required field is agent_id."""
    checker = Checker()
    checker.resource_id("agent_id", agent_id)
    checker.raise_if_any()


def check_training_config(
    checker: Checker, config: training_pb2.TrainingConfig, server: ServerConfig
) -> None:
    """Check what a training configuration's ranges (Checker.ranges) do not say."""
    if config.encoder not in ("", "hashed_ngrams", "all-MiniLM-L6-v2"):
        checker.add("config.encoder", "must be empty, 'hashed_ngrams' or 'all-MiniLM-L6-v2'")
    checker.resource_id("config.base_agent_id", config.base_agent_id, required=False)
    checker.resource_id("config.base_version_id", config.base_version_id, required=False)
    if (
        config.HasField("freeze_encoder_epochs")
        and config.HasField("epochs")
        and config.freeze_encoder_epochs > config.epochs > 0
    ):
        checker.add(
            "config.freeze_encoder_epochs",
            f"must be at most epochs ({config.epochs}), got {config.freeze_encoder_epochs}",
        )
    if config.base_version_id and not config.base_agent_id:
        checker.add("config.base_version_id", "needs config.base_agent_id")
    check_num_workers(checker, config, server)


def check_num_workers(
    checker: Checker, config: training_pb2.TrainingConfig, server: ServerConfig
) -> None:
    """Data-parallel training needs the Ray executor; the local one trains in one process."""
    if not config.HasField("num_workers") or config.num_workers == 1:
        return
    if not 1 <= config.num_workers <= MAX_NUM_WORKERS:
        return  # out of its range: Checker.ranges says so
    if server.executor != "ray":
        checker.add(
            "config.num_workers",
            f"is {config.num_workers}, but this server runs jobs on its {server.executor!r}"
            " executor, which trains each job in one process: leave it unset (or 1), or use a"
            " server started with --executor ray",
        )


def check_feedback(checker: Checker, field: str, feedback: str, *, required: bool) -> None:
    """Check a feedback value: correct, incorrect, or a reward in [-1, 1]."""
    if not feedback:
        if required:
            checker.add(field, "is required: 'correct', 'incorrect' or a number in [-1, 1]")
        return
    if feedback.strip().lower() in FEEDBACK_WORDS:
        return
    try:
        reward = float(feedback)
    except ValueError:
        checker.add(field, f"{feedback[:40]!r} is not 'correct', 'incorrect' or a number")
        return
    checker.number(field, reward, low=-1, high=1)


def check_train_agent(
    request: service_pb2.TrainAgentRequest, server: ServerConfig, *, from_dataset: bool = False
) -> None:
    """Validate TrainAgent (everything that can be checked without the store).

    With `dataset_id`, call it once on the request as sent and once, `from_dataset`, with the
    dataset's examples in `training_data`.
    """
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id)
    checker.enum("training_type", request.training_type, training_pb2.TrainingType)
    checker.request_id(request.request_id)
    checker.ranges(request, server)  # config and each example's propensity
    check_training_config(checker, request.config, server)
    if request.config.num_workers > 1 and request.training_type not in (
        training_pb2.TRAINING_TYPE_UNSPECIFIED,  # supervised
        training_pb2.TRAINING_TYPE_SUPERVISED,
    ):
        checker.add("config.num_workers", "more than 1 is supported by supervised training only")
    examples = request.training_data
    limit = server.max_dataset_examples if from_dataset else server.max_examples_per_request
    if request.dataset_id and not from_dataset:
        checker.resource_id("dataset_id", request.dataset_id)
        if examples:
            checker.add("training_data", "must be empty when dataset_id is set (one or the other)")
    elif not examples:
        checker.add("training_data", "is required: give at least one example per output")
    elif len(examples) > limit:
        checker.add(
            "training_data",
            f"has {len(examples)} examples; at most {limit} are allowed per request",
        )
    else:
        labelled = request.training_type != training_pb2.TRAINING_TYPE_REINFORCEMENT
        few_shot = request.training_type == training_pb2.TRAINING_TYPE_FEW_SHOT
        _check_examples(checker, examples, server, labelled=labelled, few_shot=few_shot)
    checker.raise_if_any()


def is_negative_feedback(feedback: str) -> bool:
    """Whether feedback says the output was wrong ("incorrect" or a negative reward)."""
    text = feedback.strip().lower()
    if text == "incorrect":
        return True
    try:
        return float(text) < 0
    except ValueError:
        return False


def _check_examples(
    checker: Checker,
    examples: Iterable[training_pb2.TrainingExample],
    server: ServerConfig,
    *,
    labelled: bool,
    few_shot: bool = False,
) -> None:
    """Check each example; ``labelled`` paradigms learn expected_output as the target."""
    outputs: set[str] = set()
    examples_list = list(examples)
    for index, example in enumerate(examples_list):
        field = f"training_data[{index}]"
        checker.text(f"{field}.input", example.input, server.max_text_length, required=True)
        checker.text(
            f"{field}.expected_output",
            example.expected_output,
            server.max_text_length,
            required=True,
        )
        checker.texts(
            f"{field}.context", example.context, server.max_context_turns, server.max_text_length
        )
        # Reinforcement learns from the reward alone: every interaction needs one.
        check_feedback(checker, f"{field}.feedback", example.feedback, required=not labelled)
        outputs.add(example.expected_output)
        if len(checker.violations) >= 100:  # enough to act on; stop scanning a huge request
            return
    taught_counts = collections.Counter(
        e.expected_output for e in examples_list if not is_negative_feedback(e.feedback)
    )
    taught = set(taught_counts)
    if few_shot and taught_counts and max(taught_counts.values()) > FEW_SHOT_MAX_PER_OUTPUT:
        output, count = taught_counts.most_common(1)[0]
        checker.add(
            "training_data",
            f"few_shot takes 1 to {FEW_SHOT_MAX_PER_OUTPUT} examples"
            f" per output; {output[:60]!r} has {count}: use TRAINING_TYPE_SUPERVISED or"
            " TRAINING_TYPE_TRANSFER for larger sets",
        )
    if not taught and labelled and not few_shot and not checker.violations:
        checker.add(
            "training_data",
            "teaches no output; an agent needs at least 1 (examples marked incorrect are not"
            " taught)",
        )
    if len(outputs) > server.max_outputs_per_agent:
        checker.add(
            "training_data",
            f"has {len(outputs)} distinct outputs; at most"
            f" {server.max_outputs_per_agent} are allowed per agent",
        )


def check_training_id(training_id: str) -> None:
    """Validate a request whose only required field is training_id."""
    checker = Checker()
    checker.resource_id("training_id", training_id)
    checker.raise_if_any()


def check_analysis_id(analysis_id: str) -> None:
    """Validate a request whose only required field is analysis_id."""
    checker = Checker()
    checker.resource_id("analysis_id", analysis_id)
    checker.raise_if_any()


def check_invoke_agent(request: service_pb2.InvokeAgentRequest, server: ServerConfig) -> None:
    """Validate InvokeAgent."""
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id)
    checker.resource_id("version_id", request.version_id, required=False)
    if bool(request.input) == bool(request.inputs):
        checker.add("input", "set exactly one of input (one text) and inputs (a batch)")
    if len(request.inputs) > server.max_batch_size:
        checker.add(
            "inputs",
            f"has {len(request.inputs)} texts; at most"
            f" {server.max_batch_size} are allowed per call",
        )
    texts = [request.input] if request.input else request.inputs
    for index, text in enumerate(texts[: server.max_batch_size]):
        field = "input" if request.input else f"inputs[{index}]"
        checker.text(field, text, server.max_text_length, required=True)
        if len(checker.violations) >= 100:
            break
    checker.texts("context", request.context, server.max_context_turns, server.max_text_length)
    checker.raise_if_any()


def check_few_shot_outputs(
    request: service_pb2.TrainAgentRequest, extends_few_shot_version: bool
) -> None:
    """few_shot may teach a single new output only when it extends a few_shot version."""
    taught = {
        e.expected_output for e in request.training_data if not is_negative_feedback(e.feedback)
    }
    if len(taught) >= 2 or extends_few_shot_version:
        return
    checker = Checker()
    checker.add(
        "training_data",
        f"teaches {len(taught)} distinct output(s); few_shot needs at"
        " least 2, or an agent whose active version was trained with few_shot to extend",
    )
    checker.raise_if_any()


def check_extended_outputs(
    request: service_pb2.TrainAgentRequest, existing: Sequence[str], max_outputs: int
) -> None:
    """A job that extends a version keeps its outputs: together they stay within the limit."""
    outputs = set(existing) | {e.expected_output for e in request.training_data}
    if len(outputs) <= max_outputs:
        return
    checker = Checker()
    checker.add(
        "training_data",
        f"would give the agent {len(outputs)} distinct outputs (its active version has"
        f" {len(set(existing))}); at most {max_outputs} are allowed per agent",
    )
    checker.raise_if_any()
