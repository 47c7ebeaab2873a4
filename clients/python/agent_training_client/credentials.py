"""How the client proves who it is: a bearer token on every call, TLS and mutual TLS.

The token is sent as ``authorization: Bearer <token>`` metadata by a channel interceptor, so it
works on a TLS channel and, for a local server or one behind a TLS-terminating proxy, on a
plaintext one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from agent_training_client.settings import (
    CLIENT_CERT_ENV,
    CLIENT_KEY_ENV,
    TOKEN_ENV,
    ClientSettings,
)

__all__ = [
    "TOKEN_ENV",
    "BearerTokenInterceptor",
    "channel_credentials",
    "tls_credentials",
    "token_from_env",
]


def tls_credentials(
    root_certificates: bytes | str | Path | None = None,
    client_certificate: bytes | str | Path | None = None,
    client_key: bytes | str | Path | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials; file paths or PEM bytes.

    Args:
        root_certificates: CA bundle that signed the server's certificate (None: the system's).
        client_certificate: The client's certificate chain, for mutual TLS.
        client_key: The private key of ``client_certificate``.
    """
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate and client_key go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates),
        private_key=_pem(client_key),
        certificate_chain=_pem(client_certificate),
    )


def _pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def channel_credentials(settings: ClientSettings) -> grpc.ChannelCredentials | None:
    """The TLS channel credentials ``settings`` ask for, or None for a plaintext channel.

    Args:
        settings: Connection settings, e.g. :meth:`ClientSettings.from_env`.

    Raises:
        ValueError: A client certificate without its key, or a key without its certificate.
        OSError: A certificate or key file that cannot be read.
    """
    if not settings.uses_tls:
        return None
    if (settings.client_cert is None) != (settings.client_key is None):
        raise ValueError(
            f"client_cert and client_key go together ({CLIENT_CERT_ENV}, {CLIENT_KEY_ENV})"
        )
    return tls_credentials(settings.ca_cert, settings.client_cert, settings.client_key)


def token_from_env() -> str | None:
    """The token in AGENT_TRAINING_TOKEN, if set and not blank."""
    return ClientSettings.from_env().token


class _ClientCallDetails(grpc.ClientCallDetails):
    def __init__(
        self, details: grpc.ClientCallDetails, metadata: tuple[tuple[str, str | bytes], ...]
    ) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _ClientCallDetails(details, (*(details.metadata or ()), self._header))

    # The four kinds of call alike: the token goes in, the request (or its stream) passes through.
    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Call on with the token added."""
        return continuation(self._with_token(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Call on with the token added."""
        return continuation(self._with_token(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Call on with the token added."""
        return continuation(self._with_token(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        """Call on with the token added."""
        return continuation(self._with_token(client_call_details), request_iterator)
