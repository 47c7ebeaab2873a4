"""Builds the server's transport security and authentication from its configuration.

Every file a setting names is read here, at start-up: one that cannot be read, or is not what
the setting wants, stops the start with a StartupError naming the setting.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from agent_training_server.auth.interceptor import Authentication

__all__ = ["Authentication", "authentication", "open_prefixes", "server_credentials"]
from agent_training_server.auth.tokens import Authenticator, JwtSettings, JwtVerifier, TokenFile
from agent_training_server.config import ServerConfig, setting_name
from agent_training_server.startup import StartupError

OPEN_SERVICE_PREFIXES = {
    "health": f"/{health_pb2.DESCRIPTOR.services_by_name['Health'].full_name}/",
    # Every reflection version (grpc.reflection.v1alpha, grpc.reflection.v1).
    "reflection": "/grpc.reflection.",
}
"""Method prefixes of the services ``auth_open_services`` can leave open, by short name."""


def _read(path: str, setting: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise StartupError(
            f"cannot read {what} {path} ({error.strerror or error});"
            f" set {setting_name(setting)} to a readable file"
        ) from error


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials (mutual TLS with a client CA), or None for plaintext.

    Raises:
        StartupError: a certificate file cannot be read, or is not PEM, or the key does not
            belong to the certificate.
    """
    if not config.tls_cert_file:
        return None
    chain = _read(config.tls_cert_file, "tls_cert_file", "the TLS certificate")
    key = _read(config.tls_key_file, "tls_key_file", "the TLS private key")
    client_ca = None
    if config.tls_client_ca_file:
        client_ca = _read(config.tls_client_ca_file, "tls_client_ca_file", "the client CA bundle")
    _check_pem(config)
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _check_pem(config: ServerConfig) -> None:
    """Load the pair as TLS would: gRPC finds out only at the first handshake, failing it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except ssl.SSLError as error:
        raise StartupError(
            f"{config.tls_cert_file} and {config.tls_key_file} are not a PEM certificate chain"
            f" and its private key ({error.reason or error}); set"
            f" {setting_name('tls_cert_file')} and {setting_name('tls_key_file')}"
        ) from error
    if config.tls_client_ca_file:
        try:
            context.load_verify_locations(config.tls_client_ca_file)
        except ssl.SSLError as error:
            raise StartupError(
                f"{config.tls_client_ca_file} is not a PEM CA bundle ({error.reason or error});"
                f" set {setting_name('tls_client_ca_file')}"
            ) from error


def authentication(config: ServerConfig) -> Authentication | None:
    """The configured token checks, or None when authentication is off.

    Raises:
        StartupError: a token file or JWT key cannot be read or is malformed.
    """
    authenticators: list[Authenticator] = []
    if config.auth_token_file:
        _read(config.auth_token_file, "auth_token_file", "the token file")
        try:
            authenticators.append(TokenFile.load(Path(config.auth_token_file)))
        except ValueError as error:
            raise StartupError(
                f"{error}; fix it or set {setting_name('auth_token_file')}"
            ) from error
    if config.auth_jwt_issuer:
        key_setting = "auth_jwt_jwks_file" if config.auth_jwt_jwks_file else "auth_jwt_key_file"
        _read(getattr(config, key_setting), key_setting, "the JWT verification keys")
        settings = JwtSettings(
            issuer=config.auth_jwt_issuer,
            audience=config.auth_jwt_audience,
            key_file=config.auth_jwt_key_file,
            jwks_file=config.auth_jwt_jwks_file,
            algorithms=tuple(_names(config.auth_jwt_algorithms)),
            tenant_claim=config.auth_jwt_tenant_claim,
        )
        try:
            authenticators.append(JwtVerifier(settings))
        except ValueError as error:
            raise StartupError(f"{error}; set {setting_name(key_setting)}") from error
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
