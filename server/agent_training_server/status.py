"""A domain error as a gRPC status with its rich details.

Both the error interceptor (api/error_translation.py) and the authentication interceptor
(auth/interceptor.py) answer with these statuses; the builder lives here, below both, so neither
imports the other.

Every status carries a ``google.rpc.Status`` in ``grpc-status-details-bin`` with our
``ErrorDetail`` (the seed's error object), a ``google.rpc.ErrorInfo``, a ``RetryInfo`` when
retrying helps and a ``BadRequest`` with field violations for invalid input.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from agent_training.v1 import errors_pb2
from agent_training_server import errors

ERROR_DOMAIN = "agent-training.v1"

_STATUS_BY_ERROR: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unimplemented: grpc.StatusCode.UNIMPLEMENTED,
    errors.Internal: grpc.StatusCode.INTERNAL,
}

MAX_MESSAGE_CHARS = 1_000
"""Longest message or hint sent: the status travels in trailing metadata, which gRPC caps at
8 KiB by default (past it a client sees RESOURCE_EXHAUSTED instead of the error), and the message
appears there three times (grpc-message, the Status and the ErrorDetail)."""


def status_code_for(error: errors.ServiceError) -> grpc.StatusCode:
    """Return the gRPC status code of a domain error."""
    for kind in type(error).__mro__:
        if kind in _STATUS_BY_ERROR:
            return _STATUS_BY_ERROR[kind]
    return grpc.StatusCode.INTERNAL


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def error_detail(error: errors.ServiceError, trace_id: str) -> errors_pb2.ErrorDetail:
    """Return the seed's error object for a domain error."""
    return errors_pb2.ErrorDetail(
        code=error.code,
        message=_clipped(error.message),
        hint=_clipped(error.hint),
        retryable=error.retryable,
        trace_id=trace_id,
    )


def to_status(error: errors.ServiceError, trace_id: str) -> grpc.Status:
    """Build the rich gRPC status for a domain error."""
    code = status_code_for(error)
    details: list[Message] = [
        error_detail(error, trace_id),
        error_details_pb2.ErrorInfo(
            reason=error.code, domain=ERROR_DOMAIN, metadata={"trace_id": trace_id}
        ),
    ]
    if error.retryable:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(int((error.retry_after_seconds or 1.0) * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    if error.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    text = _clipped(error.message)
    message = f"{text} (trace_id={trace_id})" if trace_id else text
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=message, details=packed)
    return rpc_status.to_status(status)
