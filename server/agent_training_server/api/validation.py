"""Request validation: every field checked, every problem reported at once with how to fix it.

Validators collect field violations and raise one InvalidArgument carrying all of them, so a
caller fixes a request in one round trip. Nothing is stored before validation passes.

The collector and the rules every layer shares are in `checks` and `example_checks`; this
module adds the contract's own (field limits, enums, page tokens) and one validator per request.

The sizes and ranges themselves live in one table (`field_limits`): the call guard refuses a
request with a field over its size (`check_sizes`) before the handler runs, and each validator
checks the request's numbers against their ranges (`Checker.ranges`) with its other rules.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from agent_training.v1 import agents_pb2, service_pb2, training_pb2
from agent_training_server import checks, devices
from agent_training_server.api import limit_checks
from agent_training_server.api.field_limits import (
    MAX_ASSIGNMENT_KEY,
    MAX_BEHAVIOR_FALLBACK,
    MAX_DESCRIPTION,
    MAX_DISPLAY_NAME,
    MAX_METRIC_NAME,
    MAX_NUM_WORKERS,
    MAX_REQUEST_ID,
    PAGE_SIZE,
)
from agent_training_server.checks import CONTROL_CHARACTER
from agent_training_server.config import ServerConfig
from agent_training_server.example_checks import check_training_examples

if TYPE_CHECKING:
    # The stubs' generic base of every generated enum's metaclass (EnumTypeWrapper is its [int]).
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

DEFAULT_PAGE_SIZE = 50
DATA_PARALLEL_TYPES = (
    training_pb2.TRAINING_TYPE_UNSPECIFIED,  # supervised
    training_pb2.TRAINING_TYPE_SUPERVISED,
    training_pb2.TRAINING_TYPE_FEW_SHOT,
    training_pb2.TRAINING_TYPE_TRANSFER,
)
"""Training types whose engines train data-parallel (num_workers above 1, on Ray)."""


class Checker(checks.Checker):
    """Collects field violations of one request, with the contract's own rules."""

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
        self,
        field: str,
        value: int,
        wrapper: _EnumTypeWrapper[Any],
        *,
        allow_unspecified: bool = True,
    ) -> None:
        """Check that an enum value is one the contract defines."""
        # EnumTypeWrapper is not a dict: keys() is its only way to list names.
        all_names = wrapper.keys()
        names = [name for name in all_names if not name.endswith("_UNSPECIFIED")]
        if value not in wrapper.values():
            self.add(field, f"unknown value {value}; use one of {', '.join(names)}")
        elif value == 0 and not allow_unspecified:
            self.add(field, f"is required; use one of {', '.join(names)}")

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


def check_sizes(message: Message, config: ServerConfig, *, with_ranges: bool = False) -> None:
    """Refuse a message with a field over its size limit (see field_limits).

    The call guard runs it on every request before the handler. `with_ranges` also checks its
    numbers, for messages no validator sees whole (the chunks of an upload).
    """
    checker = Checker()
    found: list[limit_checks.Oversize] = []
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
        if checker.full:
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
    if config.device:
        try:
            devices.parse(config.device)
        except ValueError as error:
            checker.add("config.device", f"{error}; or leave it empty for the server's setting")
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


def check_train_agent(request: service_pb2.TrainAgentRequest, server: ServerConfig) -> None:
    """Validate TrainAgent (everything that can be checked without the store).

    With `dataset_id`, the training service checks the dataset's examples once it has read
    them, with the same example checker (example_checks).
    """
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id)
    checker.enum("training_type", request.training_type, training_pb2.TrainingType)
    checker.request_id(request.request_id)
    checker.ranges(request, server)  # config and each example's propensity
    check_training_config(checker, request.config, server)
    if request.config.num_workers > 1 and request.training_type not in DATA_PARALLEL_TYPES:
        checker.add(
            "config.num_workers",
            "more than 1 is supported by supervised, few_shot and transfer training only",
        )
    examples = request.training_data
    if request.dataset_id:
        checker.resource_id("dataset_id", request.dataset_id)
        if examples:
            checker.add("training_data", "must be empty when dataset_id is set (one or the other)")
    else:
        check_training_examples(
            checker,
            examples,
            server,
            max_examples=server.max_examples_per_request,
            labelled=request.training_type != training_pb2.TRAINING_TYPE_REINFORCEMENT,
            few_shot=request.training_type == training_pb2.TRAINING_TYPE_FEW_SHOT,
        )
    checker.raise_if_any()


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
        if checker.full:
            break
    checker.texts("context", request.context, server.max_context_turns, server.max_text_length)
    checker.text("assignment_key", request.assignment_key, MAX_ASSIGNMENT_KEY)
    checker.raise_if_any()


def next_page_token(position: dict[str, Any], present: str) -> str:
    """The token of the next page at `position`; empty when `present` says there is none."""
    return encode_page_token(position) if present else ""
