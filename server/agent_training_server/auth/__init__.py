"""Authentication and tenancy: who calls, which tenant's data they see, what they may do.

See docs/security.md. `current_tenant()` is the one way code learns the caller's tenant.
"""

from agent_training_server.auth.principal import (
    DEFAULT_TENANT,
    LOCAL_PRINCIPAL,
    Principal,
    current_principal,
    current_tenant,
)
from agent_training_server.auth.scopes import METHOD_SCOPES, SCOPES

__all__ = [
    "DEFAULT_TENANT",
    "LOCAL_PRINCIPAL",
    "METHOD_SCOPES",
    "SCOPES",
    "Principal",
    "current_principal",
    "current_tenant",
]
