"""Where the client connects and how: the one place that reads the client's environment variables.

:class:`~agent_training_client.AgentTrainingClient` reads them through
:meth:`ClientSettings.from_env`; the CLI's flags take their defaults from the same variables, and
the TypeScript client (``clients/node/src/settings.ts``) reads them too:

- ``AGENT_TRAINING_TARGET``: ``host:port`` of the service (default ``127.0.0.1:50051``);
- ``AGENT_TRAINING_TOKEN``: bearer token sent with every call;
- ``AGENT_TRAINING_TLS``: ``1``, ``true`` or ``yes`` for TLS, trusting the system's CAs;
- ``AGENT_TRAINING_CA_CERT``: PEM CA bundle that signed the server's certificate; implies TLS;
- ``AGENT_TRAINING_CLIENT_CERT``: PEM client certificate for mutual TLS; implies TLS;
- ``AGENT_TRAINING_CLIENT_KEY``: PEM private key of the client certificate.

A variable that is unset or blank counts as not set. Explicit arguments win over the variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_TARGET = "127.0.0.1:50051"
"""Where a client connects when neither an argument nor AGENT_TRAINING_TARGET says otherwise."""

TARGET_ENV = "AGENT_TRAINING_TARGET"
"""Environment variable of the service's ``host:port``."""
TOKEN_ENV = "AGENT_TRAINING_TOKEN"
"""Environment variable the client and CLI read the bearer token from."""
TLS_ENV = "AGENT_TRAINING_TLS"
"""Environment variable that turns TLS on (``1``, ``true``, ``yes``) with the system's CAs."""
CA_CERT_ENV = "AGENT_TRAINING_CA_CERT"
"""Environment variable of the PEM CA bundle file that signed the server's certificate."""
CLIENT_CERT_ENV = "AGENT_TRAINING_CLIENT_CERT"
"""Environment variable of the PEM client certificate file, for mutual TLS."""
CLIENT_KEY_ENV = "AGENT_TRAINING_CLIENT_KEY"
"""Environment variable of the PEM private key file of the client certificate."""

_TRUE = ("1", "true", "yes")  # what the CLI's --tls default accepts


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """Connection settings of a client; ``ClientSettings()`` is plaintext to the default target.

    Pass one as ``AgentTrainingClient(settings=...)`` to ignore the environment altogether.
    """

    target: str = DEFAULT_TARGET
    """``host:port`` of the service (any gRPC target, e.g. ``dns:///host:443``)."""
    token: str | None = None
    """Bearer token sent as ``authorization: Bearer <token>`` with every call; None: no token."""
    tls: bool = False
    """Connect over TLS, trusting the system's CAs unless ``ca_cert`` is given."""
    ca_cert: str | None = None
    """Path of the PEM CA bundle that signed the server's certificate; implies TLS."""
    client_cert: str | None = None
    """Path of the PEM client certificate chain, for mutual TLS; implies TLS."""
    client_key: str | None = None
    """Path of the PEM private key of ``client_cert``."""

    @property
    def uses_tls(self) -> bool:
        """Whether the channel is a TLS one: ``tls`` set, or a CA or client certificate given."""
        return self.tls or bool(self.ca_cert or self.client_cert or self.client_key)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ClientSettings:
        """Read the AGENT_TRAINING_* client variables; unset or blank ones keep the defaults.

        Args:
            environ: The variables to read; default: ``os.environ``.

        Returns:
            The settings the variables describe.
        """
        environ = os.environ if environ is None else environ

        def value(name: str) -> str | None:
            return environ.get(name, "").strip() or None

        return cls(
            target=value(TARGET_ENV) or DEFAULT_TARGET,
            token=value(TOKEN_ENV),
            tls=(value(TLS_ENV) or "").lower() in _TRUE,
            ca_cert=value(CA_CERT_ENV),
            client_cert=value(CLIENT_CERT_ENV),
            client_key=value(CLIENT_KEY_ENV),
        )
