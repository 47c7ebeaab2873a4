"""Bearer tokens: a token file of opaque tokens, and JWTs from an external issuer.

Token file (JSON)::

    {"tokens": [
      {"name": "ci", "tenant": "acme", "scopes": ["training:write", "training:read"],
       "token_sha256": "<hex SHA-256 of the token>"},
      {"name": "dev", "tenant": "acme", "scopes": ["admin"], "token": "<the token itself>"}
    ]}

``token_sha256`` keeps the secret itself out of the file; ``token`` is accepted for local use.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import jwt

from agent_training_server.auth.principal import Principal
from agent_training_server.auth.scopes import SCOPES, check_scopes
from agent_training_server.errors import Unauthenticated

TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Tenant names: short, printable, safe in logs and metric labels."""


class Authenticator(Protocol):
    """Turns a bearer token into a principal."""

    def authenticate(self, token: str) -> Principal | None:
        """The token's principal; None when the token is not this authenticator's kind.

        Raises:
            Unauthenticated: the token is of this kind but not valid.
        """


def _check_tenant(tenant: object, where: str) -> str:
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        raise ValueError(f"{where}: tenant {tenant!r} must match {TENANT_PATTERN.pattern}")
    return tenant


def token_digest(token: str) -> str:
    """Hex SHA-256 of a token, as written in a token file's ``token_sha256``."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenFile:
    """Opaque tokens listed in a JSON file, each with its tenant and scopes."""

    def __init__(self, by_digest: Mapping[str, Principal]) -> None:
        self._by_digest = dict(by_digest)

    @classmethod
    def load(cls, path: Path) -> TokenFile:
        """Read a token file.

        Raises:
            ValueError: the file is unreadable or an entry is malformed, with the entry's index.
        """
        try:
            entries = json.loads(path.read_text())["tokens"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"auth_token_file {path}: not a JSON token file ({error})") from error
        by_digest: dict[str, Principal] = {}
        for index, entry in enumerate(entries):
            where = f"auth_token_file {path}, tokens[{index}]"
            digest, principal = _entry(entry, where)
            if digest in by_digest:
                raise ValueError(f"{where}: the same token is listed twice")
            by_digest[digest] = principal
        return cls(by_digest)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a listed token; None for a token not in the file."""
        return self._by_digest.get(token_digest(token))


def _entry(entry: Any, where: str) -> tuple[str, Principal]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: each token is an object")
    if "token_sha256" in entry:
        digest = str(entry["token_sha256"]).lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{where}: token_sha256 must be 64 hex digits")
    elif isinstance(entry.get("token"), str) and len(entry["token"]) >= 16:
        digest = token_digest(entry["token"])
    else:
        raise ValueError(f"{where}: give token_sha256, or a token of at least 16 characters")
    scopes = entry.get("scopes")
    if not isinstance(scopes, list) or not scopes:
        raise ValueError(f"{where}: scopes must be a non-empty list")
    tenant = _check_tenant(entry.get("tenant"), where)
    name = str(entry.get("name", f"token {digest[:8]}"))
    return digest, Principal(tenant, name, check_scopes(scopes, where))


@dataclasses.dataclass(frozen=True, kw_only=True)
class JwtSettings:
    """How JWTs of the external issuer are verified."""

    issuer: str
    audience: str = ""
    key_file: str = ""
    """PEM public key (or, for HS* algorithms, the shared secret)."""
    jwks_file: str = ""
    """JSON Web Key Set; the token header's ``kid`` picks the key."""
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    tenant_claim: str = "tenant"
    leeway_seconds: float = 30.0


class JwtVerifier:
    """Verifies JWTs (signature, ``iss``, ``aud``, ``exp``, ``nbf``) with PyJWT.

    A signature check costs a few hundred microseconds, about as much as a whole small call, and
    clients send the same token on every call until it expires: verified tokens are remembered
    (by digest, at most ``CACHE_SIZE``) until their ``exp``.
    """

    CACHE_SIZE = 4096

    def __init__(self, settings: JwtSettings) -> None:
        self._settings = settings
        self._verified: collections.OrderedDict[str, tuple[Principal, float]] = (
            collections.OrderedDict()
        )
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        try:
            if settings.jwks_file:
                self._jwks = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text())
            elif settings.key_file:
                self._key = Path(settings.key_file).read_bytes()
            else:
                raise ValueError("auth_jwt_issuer needs auth_jwt_key_file or auth_jwt_jwks_file")
        except (OSError, jwt.PyJWTError) as error:
            raise ValueError(f"JWT verification keys: {error}") from error

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a valid JWT; None for a token that is not a JWT.

        Raises:
            Unauthenticated: the JWT fails verification or has expired.
        """
        if token.count(".") != 2:
            return None
        digest = token_digest(token)
        remembered = self._verified.get(digest)
        if remembered is not None and time.time() < remembered[1]:
            self._verified.move_to_end(digest)
            return remembered[0]
        principal, expires = self._verify(token)
        self._verified[digest] = (principal, expires)
        if len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        s = self._settings
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=list(s.algorithms),
                issuer=s.issuer,
                audience=s.audience or None,
                leeway=s.leeway_seconds,
                options={"require": ["exp", "iss", "sub"], "verify_aud": bool(s.audience)},
            )
        except jwt.ExpiredSignatureError as error:
            raise Unauthenticated("the bearer token has expired", code="TOKEN_EXPIRED") from error
        except jwt.PyJWTError as error:
            raise _invalid(f"the JWT was refused: {error}") from error
        return self._principal(claims), float(claims["exp"])

    def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        kid = jwt.get_unverified_header(token).get("kid")
        keys = self._jwks.keys
        matching = [k for k in keys if k.key_id == kid] if kid else keys[:1]
        if not matching:
            raise jwt.InvalidKeyError(f"no key with kid {kid!r} in the JWKS file")
        return matching[0]

    def _principal(self, claims: dict[str, Any]) -> Principal:
        tenant = claims.get(self._settings.tenant_claim)
        if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
            raise _invalid(f"the JWT has no valid {self._settings.tenant_claim!r} claim")
        granted = claims.get("scope", claims.get("scp", ""))
        names = granted.split() if isinstance(granted, str) else list(granted)
        # An issuer grants scopes of other services too (openid, profile...): keep ours only.
        scopes = frozenset(name for name in names if name in SCOPES)
        return Principal(tenant, str(claims["sub"]), scopes)


def _invalid(message: str) -> Unauthenticated:
    return Unauthenticated(
        message,
        code="TOKEN_INVALID",
        hint="Send a token from the configured token file or issuer, as"
        " 'authorization: Bearer <token>'.",
    )
