"""Domain errors: what went wrong, in terms a caller can act on.

Domain code raises these; `status.py` is the one place that turns them into a gRPC status with
rich details (used by `api.error_translation` for calls and by `auth` for refused callers).
Every error has a stable code (catalogued in docs/errors.md), a message and a hint. Messages
never carry internals such as paths, SQL or stack traces.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, in the shape of google.rpc.BadRequest.FieldViolation."""

    field: str
    """Path of the field, e.g. ``config.epochs`` or ``training_data[3].input``."""
    description: str
    """What is wrong and what is allowed."""


class ServiceError(Exception):
    """Base of all errors a caller may see. Subclasses fix the kind (and so the gRPC status)."""

    default_code = "INTERNAL"
    default_hint = ""
    default_retry_after_seconds: float | None = None
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        violations: list[FieldViolation] | None = None,
        retry_after_seconds: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.hint = hint if hint is not None else self.default_hint
        self.violations = violations or []
        self.retry_after_seconds = (
            retry_after_seconds
            if retry_after_seconds is not None
            else self.default_retry_after_seconds
        )
        if retryable is not None:
            self.retryable = retryable


class InvalidArgument(ServiceError):
    """The request is malformed or a value is out of range; fixing the request helps."""

    default_code = "INVALID_ARGUMENT"
    default_hint = "Fix the fields listed in the BadRequest details and send the request again."


class NotFound(ServiceError):
    """A named resource does not exist."""

    default_code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    """The resource to create exists already."""

    default_code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The system is not in a state where the call can succeed (e.g. an agent with no version)."""

    default_code = "FAILED_PRECONDITION"


class VersionDamaged(FailedPrecondition):
    """A version's files are missing, truncated, wrongly shaped or fail their checksum.

    The version is never served; another version (or a new training) is the way out.
    """

    default_code = "VERSION_DAMAGED"
    default_hint = (
        "Activate another version with ActivateAgentVersion (CLI: agent-training agents"
        " activate AGENT VERSION), or train the agent again; the operator's log names the file."
    )


class Unauthenticated(ServiceError):
    """The call carries no valid credentials (a missing, malformed, expired or unknown token)."""

    default_code = "UNAUTHENTICATED"
    default_hint = "Send the header 'authorization: Bearer <token>' with a valid token."


class StorageReadOnly(FailedPrecondition):
    """The server's data folder cannot be written: a read-only filesystem or wrong permissions.

    Nothing was stored; the operator must make the folder writable (storage_errors.py).
    """

    default_code = "STORAGE_READ_ONLY"


class PermissionDenied(ServiceError):
    """The caller may not act on this resource (e.g. another agent's answer)."""

    default_code = "PERMISSION_DENIED"


class ResourceExhausted(ServiceError):
    """A limit was reached; retryable when it is a capacity limit that frees up."""

    default_code = "RESOURCE_EXHAUSTED"


class StorageFull(ResourceExhausted):
    """The server's data folder is out of space or over its disk quota; nothing was stored.

    Retryable: the same request succeeds once the operator frees space (storage_errors.py).
    """

    default_code = "STORAGE_FULL"
    # The time an operator needs to react, not a moment's blip: sooner would only fail again.
    default_retry_after_seconds = 30.0
    retryable = True


class Unavailable(ServiceError):
    """The service cannot take the call now (starting, shutting down); retry later."""

    default_code = "UNAVAILABLE"
    retryable = True


class Cancelled(ServiceError):
    """The operation was cancelled."""

    default_code = "CANCELLED"


class DeadlineExceeded(ServiceError):
    """The operation ran past its time limit."""

    default_code = "DEADLINE_EXCEEDED"


class Unimplemented(ServiceError):
    """The RPC is part of the contract but not served by this version of the server."""

    default_code = "NOT_IMPLEMENTED"


class Internal(ServiceError):
    """An unexpected failure inside the service; details are in the server log and trace."""

    default_code = "INTERNAL"
    default_hint = "This is a bug or an environment problem on the server; report the trace_id."
