"""Throwaway certificates, token files and JWTs for the security tests, made at test time."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import time
from pathlib import Path

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class CertificateAuthority:
    """A CA that signs server and client certificates, written as PEM files under a folder."""

    def __init__(self, folder: Path, name: str = "test-ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = folder / f"{name}.pem"
        self.cert_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool) -> tuple[Path, Path]:
        """Sign a certificate (for 127.0.0.1 and localhost when ``server``); return (cert, key)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        cert_file, key_file = self.folder / f"{name}.pem", self.folder / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        return cert_file, key_file


def write_token_file(path: Path, tokens: dict[str, tuple[str, list[str]]]) -> Path:
    """Write a token file: token -> (tenant, scopes); every other entry by its SHA-256."""
    entries = []
    for index, (token, (tenant, scopes)) in enumerate(tokens.items()):
        entry: dict = {"name": f"token-{index}", "tenant": tenant, "scopes": scopes}
        if index % 2:
            entry["token_sha256"] = hashlib.sha256(token.encode()).hexdigest()
        else:
            entry["token"] = token
        entries.append(entry)
    path.write_text(json.dumps({"tokens": entries}))
    return path


class Issuer:
    """An external identity provider's RS256 signing key, with its public key and JWKS on disk."""

    def __init__(self, folder: Path, issuer: str = "https://id.example.test/") -> None:
        self.issuer = issuer
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = self._key.public_key()
        self.key_file = folder / "issuer.pub.pem"
        self.key_file.write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        jwk.update(kid="key-1", use="sig", alg="RS256")
        self.jwks_file = folder / "issuer.jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [jwk]}))

    def token(self, **claims: object) -> str:
        """A signed JWT; defaults: this issuer, audience agent-training, valid for 5 minutes."""
        now = int(time.time())
        body = {"iss": self.issuer, "aud": "agent-training", "sub": "svc-1", "iat": now}
        body["exp"] = now + 300
        body.update(claims)
        return jwt.encode(body, self._key, algorithm="RS256", headers={"kid": "key-1"})
