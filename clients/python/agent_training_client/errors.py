"""The one exception type the client raises, carrying the seed's error object."""

from __future__ import annotations

import dataclasses
from typing import cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agent_training.v1 import errors_pb2


@dataclasses.dataclass(frozen=True)
class FieldViolation:
    """An invalid request field, from the status's BadRequest details."""

    field: str
    description: str


class AgentTrainingError(Exception):
    """A failed call: the seed's ``{code, message, hint, retryable, trace_id}`` plus gRPC facts.

    Attributes:
        code: Stable error code, e.g. ``AGENT_NOT_FOUND`` (docs/errors.md).
        message: What went wrong.
        hint: How to fix or work around it.
        retryable: Whether the same call may succeed later.
        trace_id: OpenTelemetry trace id of the request on the server.
        status_code: The gRPC status code.
        field_violations: Invalid fields, for INVALID_ARGUMENT.
        retry_delay_seconds: How long to wait before retrying, when the server said.
    """

    def __init__(
        self,
        *,
        code: str,
        message: str,
        hint: str = "",
        retryable: bool = False,
        trace_id: str = "",
        status_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        field_violations: tuple[FieldViolation, ...] = (),
        retry_delay_seconds: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" + (f" (hint: {hint})" if hint else ""))
        self.code = code
        self.message = message
        self.hint = hint
        self.retryable = retryable
        self.trace_id = trace_id
        self.status_code = status_code
        self.field_violations = field_violations
        self.retry_delay_seconds = retry_delay_seconds

    def to_dict(self) -> dict[str, object]:
        """Return the seed's error object."""
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "retryable": self.retryable,
            "trace_id": self.trace_id,
        }

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> AgentTrainingError:
        """Decode a failed call's rich status; fall back to the plain status for other servers."""
        status_code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        # A failed call's error is also its grpc.Call (the stubs type it as an RpcError only).
        has_status = hasattr(error, "trailing_metadata")
        status = rpc_status.from_call(cast(grpc.Call, error)) if has_status else None
        if status is None:
            details = error.details() if hasattr(error, "details") else str(error)
            code, hint = _plain_status_code_and_hint(status_code, details or "")
            return cls(
                code=code,
                message=details or status_code.name,
                hint=hint,
                retryable=status_code == grpc.StatusCode.UNAVAILABLE,
                status_code=status_code,
            )
        detail = errors_pb2.ErrorDetail()
        violations: list[FieldViolation] = []
        retry_delay = None
        for packed in status.details:
            if packed.Is(errors_pb2.ErrorDetail.DESCRIPTOR):
                packed.Unpack(detail)
            elif packed.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad_request = error_details_pb2.BadRequest()
                packed.Unpack(bad_request)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
            elif packed.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry_info = error_details_pb2.RetryInfo()
                packed.Unpack(retry_info)
                retry_delay = retry_info.retry_delay.ToMilliseconds() / 1000
        return cls(
            code=detail.code or status_code.name,
            message=detail.message or status.message,
            hint=detail.hint,
            retryable=detail.retryable,
            trace_id=detail.trace_id,
            status_code=status_code,
            field_violations=tuple(violations),
            retry_delay_seconds=retry_delay,
        )


def _plain_status_code_and_hint(status_code: grpc.StatusCode, details: str) -> tuple[str, str]:
    """Code and hint for a status that gRPC itself produced, without the error object.

    Such a call never reached the service's handler (a message over the size limit), or never
    left this process (the client's own deadline).
    """
    if status_code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return (
            "MESSAGE_TOO_LARGE",
            "The message is larger than the client or server accepts (max_message_bytes, 64 MiB"
            " by default): send fewer examples per call, or upload them in chunks with"
            " UploadDataset and train by dataset_id.",
        )
    if status_code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (
            "DEADLINE_EXCEEDED",
            "The call ran past its deadline and the server stopped its work: give it a longer"
            " timeout, or use the streaming variant of long operations.",
        )
    if status_code == grpc.StatusCode.UNAVAILABLE:
        return "UNAVAILABLE", UNREACHABLE_HINT
    return status_code.name, ""


UNREACHABLE_HINT = (
    "No server answers at this address. Start one (`make run` in a checkout of the project, or"
    " `agent-training serve`), or point the client at a running one: the target argument, or"
    " the AGENT_TRAINING_TARGET variable (host:port)."
)
"""The hint of a call that found no server (a refused connection, an unknown host)."""
