"""Who is calling: the principal of the current call, kept in a context variable.

The authentication interceptor sets it for each call; handlers and services read it through
`current_principal()` / `current_tenant()`. Outside a call (background work, tests, and every call
when authentication is off) it is the local principal: tenant "default" with every scope.
"""

from __future__ import annotations

import contextvars
import dataclasses

from agent_training_server.domain import DEFAULT_TENANT

ADMIN_SCOPE = "admin"


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    tenant: str
    """Whose agents, datasets and jobs the caller sees."""
    subject: str
    """Who the caller is (a token's name, a JWT's ``sub``), for logs."""
    scopes: frozenset[str]
    """What the caller may do; ``admin`` allows everything within the tenant."""

    def allows(self, scope: str) -> bool:
        """Whether the principal holds ``scope`` (or ``admin``)."""
        return scope in self.scopes or ADMIN_SCOPE in self.scopes


LOCAL_PRINCIPAL = Principal(DEFAULT_TENANT, "local", frozenset({ADMIN_SCOPE}))

_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "agent_training_principal", default=LOCAL_PRINCIPAL
)


def current_principal() -> Principal:
    """The caller of the call being handled (the local principal outside calls)."""
    return _principal.get()


def current_tenant() -> str:
    """The tenant of the call being handled ("default" when authentication is off)."""
    return _principal.get().tenant


def set_principal(principal: Principal) -> contextvars.Token[Principal]:
    """Make ``principal`` the caller for the rest of the current context (one call's task)."""
    return _principal.set(principal)
