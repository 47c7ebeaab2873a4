"""Builds the server's transport security and authentication from its configuration."""

from __future__ import annotations

from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from agent_training_server.auth.interceptor import Authentication

__all__ = ["Authentication", "authentication", "open_prefixes", "server_credentials"]
from agent_training_server.auth.tokens import Authenticator, JwtSettings, JwtVerifier, TokenFile
from agent_training_server.config import ServerConfig

OPEN_SERVICE_PREFIXES = {
    "health": f"/{health_pb2.DESCRIPTOR.services_by_name['Health'].full_name}/",
    # Every reflection version (grpc.reflection.v1alpha, grpc.reflection.v1).
    "reflection": "/grpc.reflection.",
}
"""Method prefixes of the services ``auth_open_services`` can leave open, by short name."""


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f"{setting}: cannot read {path} ({error.strerror})") from error


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials (mutual TLS with a client CA), or None for plaintext.

    Raises:
        ValueError: a certificate file cannot be read.
    """
    if not config.tls_cert_file:
        return None
    chain = _read(config.tls_cert_file, "tls_cert_file")
    key = _read(config.tls_key_file, "tls_key_file")
    client_ca = None
    if config.tls_client_ca_file:
        client_ca = _read(config.tls_client_ca_file, "tls_client_ca_file")
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def authentication(config: ServerConfig) -> Authentication | None:
    """The configured token checks, or None when authentication is off.

    Raises:
        ValueError: a token file or JWT key cannot be read or is malformed.
    """
    authenticators: list[Authenticator] = []
    if config.auth_token_file:
        authenticators.append(TokenFile.load(Path(config.auth_token_file)))
    if config.auth_jwt_issuer:
        settings = JwtSettings(
            issuer=config.auth_jwt_issuer,
            audience=config.auth_jwt_audience,
            key_file=config.auth_jwt_key_file,
            jwks_file=config.auth_jwt_jwks_file,
            algorithms=tuple(_names(config.auth_jwt_algorithms)),
            tenant_claim=config.auth_jwt_tenant_claim,
        )
        authenticators.append(JwtVerifier(settings))
    return Authentication(authenticators) if authenticators else None


def open_prefixes(config: ServerConfig) -> list[str]:
    """Method prefixes callable without a token (``auth_open_services``).

    Raises:
        ValueError: a name that is not one of OPEN_SERVICE_NAMES.
    """
    prefixes = []
    for name in _names(config.auth_open_services):
        if name not in OPEN_SERVICE_PREFIXES:
            raise ValueError(
                f"auth_open_services: {name!r} is not one of {sorted(OPEN_SERVICE_PREFIXES)}"
            )
        prefixes.append(OPEN_SERVICE_PREFIXES[name])
    return prefixes


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]
