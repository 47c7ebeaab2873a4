"""Who the caller is, for per-tenant limits.

Every caller is the tenant ``default`` until authentication maps callers to tenants; this module
is the one seam per-tenant limits ask, so that mapping replaces it in one place.
"""

from __future__ import annotations

DEFAULT_TENANT = "default"


def current_tenant() -> str:
    """The tenant of the call being handled."""
    return DEFAULT_TENANT


def tenant_of(resource: object) -> str:
    """The tenant a stored resource (agent, job, dataset) belongs to."""
    return DEFAULT_TENANT
