"""The authentication interceptor: bearer token -> principal, and the scope check per RPC.

It wraps every handler (except those of open services such as health checking) so that the
check runs inside the call: the principal is set in the call's own context, and a refusal
carries the error object with the call's trace id, like any other error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from opentelemetry import trace

from agent_training_server.auth.principal import Principal, set_principal
from agent_training_server.auth.scopes import METHOD_SCOPES
from agent_training_server.auth.tokens import Authenticator
from agent_training_server.errors import PermissionDenied, ServiceError, Unauthenticated
from agent_training_server.grpc_handlers import Continuation, aio_handler
from agent_training_server.status import to_status
from agent_training_server.telemetry import current_trace_id

log = logging.getLogger(__name__)

Admit = Callable[[grpc.aio.ServicerContext], Principal]
TENANT_ATTRIBUTE = "agent_training.tenant"
"""Span attribute naming the caller's tenant."""


class Authentication:
    """Tries each authenticator in turn on the call's bearer token."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self._authenticators = list(authenticators)

    def principal(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        """The caller's principal.

        Raises:
            Unauthenticated: no bearer token, or one that no authenticator accepts.
        """
        token = bearer_token(metadata)
        for authenticator in self._authenticators:
            principal = authenticator.authenticate(token)
            if principal is not None:
                return principal
        raise Unauthenticated(
            "the bearer token is not valid",
            code="TOKEN_INVALID",
            hint="Send a token from the configured token file or issuer, as"
            " 'authorization: Bearer <token>'.",
        )


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token of the call's ``authorization: Bearer`` header.

    Raises:
        Unauthenticated: the header is missing or is not a bearer token.
    """
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise Unauthenticated(
                "the authorization header is not a bearer token",
                code="TOKEN_MALFORMED",
                hint="Send 'authorization: Bearer <token>'.",
            )
    raise Unauthenticated(
        "this server requires a bearer token",
        code="TOKEN_MISSING",
        hint="Send 'authorization: Bearer <token>' (the CLI and Python client read"
        " AGENT_TRAINING_TOKEN).",
    )


def check_scope(principal: Principal, scope: str, action: str) -> None:
    """Refuse a principal without ``scope``.

    Raises:
        PermissionDenied: naming the missing scope.
    """
    if not principal.allows(scope):
        raise PermissionDenied(
            f"{action} needs the scope {scope!r}",
            code="SCOPE_MISSING",
            hint=f"Use a token that grants {scope!r} (or 'admin'); the token grants"
            f" {', '.join(sorted(principal.scopes)) or 'no scopes of this service'}.",
        )


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call except those of open services, and checks the RPC's scope.

    Place it inside the tracing interceptor (so refusals carry the trace id) and inside the
    metrics interceptor (so refusals are counted by code).
    """

    def __init__(
        self, authentication: Authentication, service_prefix: str, open_prefixes: Sequence[str]
    ) -> None:
        self._authentication = authentication
        self._service_prefix = service_prefix
        self._open_prefixes = tuple(open_prefixes)

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the handler with the token and scope check."""
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self._open_prefixes):
            return handler
        return _wrapped(handler, self._admitter(method))

    def _admitter(self, method: str) -> Admit:
        scope = None
        if method.startswith(self._service_prefix):
            name = method.removeprefix(self._service_prefix)
            # An RPC missing from METHOD_SCOPES is refused to all but admin tokens.
            scope = METHOD_SCOPES.get(name, "admin")

        def admit(context: grpc.aio.ServicerContext) -> Principal:
            principal = self._authentication.principal(context.invocation_metadata())
            # On the server span, so an operator can find one tenant's calls in the traces.
            span = trace.get_current_span()
            span.set_attribute("enduser.id", principal.subject)
            span.set_attribute(TENANT_ATTRIBUTE, principal.tenant)
            if scope is not None:
                check_scope(principal, scope, method.rsplit("/", 1)[-1])
            return principal

        return admit


async def _refuse(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    status = to_status(error, current_trace_id())
    await context.abort(status.code, status.details, status.trailing_metadata)


def _wrapped(
    found: grpc.RpcMethodHandler[Any, Any], admit: Admit
) -> grpc.RpcMethodHandler[Any, Any]:
    # The principal is set, not reset: each call runs in its own task, whose context ends with it.
    def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                set_principal(admit(context))
            except ServiceError as error:
                await _refuse(context, error)
            return await behavior(request, context)

        return handle

    def stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                set_principal(admit(context))
            except ServiceError as error:
                await _refuse(context, error)
            async for response in behavior(request, context):
                yield response

        return handle

    handler = aio_handler(found)
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=unary(handler.unary_unary))
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=stream(handler.unary_stream))
    if handler.stream_unary is not None:
        return handler._replace(stream_unary=unary(handler.stream_unary))
    if handler.stream_stream is not None:
        return handler._replace(stream_stream=stream(handler.stream_stream))
    return found
