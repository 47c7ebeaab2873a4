"""The Python client reads AGENT_TRAINING_TARGET, the token and the TLS variables like the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent_training_client import AgentTrainingClient, ClientSettings, tls_credentials
from agent_training_client.settings import (
    CA_CERT_ENV,
    CLIENT_CERT_ENV,
    CLIENT_KEY_ENV,
    DEFAULT_TARGET,
    TARGET_ENV,
    TLS_ENV,
    TOKEN_ENV,
)
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.security_support import CertificateAuthority, write_token_file

CLIENT_VARIABLES = (TARGET_ENV, TOKEN_ENV, TLS_ENV, CA_CERT_ENV, CLIENT_CERT_ENV, CLIENT_KEY_ENV)
NOBODY = "127.0.0.1:1"  # nothing listens there: a refused connection, UNAVAILABLE at once
TOKEN = "token-settings-admin-0001"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No client variable from the caller's shell leaks into a test."""
    for name in CLIENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _serve(folder: Path, **settings: object) -> Iterator[ServerThread]:
    running = ServerThread(make_config(folder, **settings))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    yield from _serve(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    folder = tmp_path_factory.mktemp("token")
    tokens = write_token_file(folder / "tokens.json", {TOKEN: ("tenant-a", ["admin"])})
    yield from _serve(folder, auth_token_file=str(tokens))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority
) -> Iterator[ServerThread]:
    cert, key = ca.issue("server-tls", server=True)
    folder = tmp_path_factory.mktemp("tls")
    yield from _serve(folder, tls_cert_file=str(cert), tls_key_file=str(key))


def assert_unavailable(client: AgentTrainingClient) -> None:
    """The call fails at the transport: no RPC reaches the service."""
    error = expect_error(client.list_agents)
    assert error.status_code == grpc.StatusCode.UNAVAILABLE, error


# Reading the variables -------------------------------------------------------------------------


def test_unset_or_blank_variables_keep_the_defaults() -> None:
    assert ClientSettings.from_env({}) == ClientSettings()
    blank = ClientSettings.from_env({name: "  " for name in CLIENT_VARIABLES})
    assert blank == ClientSettings(target=DEFAULT_TARGET)
    assert not blank.uses_tls


def test_every_variable_is_read() -> None:
    settings = ClientSettings.from_env(
        {
            TARGET_ENV: "svc.example:443",
            TOKEN_ENV: " secret \n",
            TLS_ENV: "TRUE",
            CA_CERT_ENV: "ca.pem",
            CLIENT_CERT_ENV: "client.pem",
            CLIENT_KEY_ENV: "client.key",
        }
    )
    assert settings == ClientSettings(
        target="svc.example:443",
        token="secret",
        tls=True,
        ca_cert="ca.pem",
        client_cert="client.pem",
        client_key="client.key",
    )


@pytest.mark.parametrize(
    ("value", "tls"), [("1", True), ("yes", True), ("0", False), ("no", False)]
)
def test_tls_variable_takes_the_cli_spellings(value: str, tls: bool) -> None:
    assert ClientSettings.from_env({TLS_ENV: value}).uses_tls is tls


def test_a_ca_or_client_certificate_implies_tls() -> None:
    assert ClientSettings.from_env({CA_CERT_ENV: "ca.pem"}).uses_tls
    assert ClientSettings.from_env({CLIENT_CERT_ENV: "c.pem", CLIENT_KEY_ENV: "c.key"}).uses_tls


# The target ------------------------------------------------------------------------------------


def test_a_client_without_a_target_dials_agent_training_target(
    plain_server: ServerThread, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(TARGET_ENV, plain_server.address)
    with AgentTrainingClient(timeout=10) as client:
        assert client.health() == "SERVING"
        assert client.create_agent(agent_id="from-env-target").agent_id == "from-env-target"


def test_an_explicit_target_wins_over_the_variable(
    plain_server: ServerThread, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(TARGET_ENV, NOBODY)
    with AgentTrainingClient(plain_server.address, timeout=10) as client:
        assert client.health() == "SERVING"
    with AgentTrainingClient(timeout=3) as client:
        assert_unavailable(client)


def test_settings_replace_the_environment(
    plain_server: ServerThread, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(TARGET_ENV, NOBODY)
    clean_environment.setenv(TLS_ENV, "1")
    settings = ClientSettings(target=plain_server.address)
    with AgentTrainingClient(settings=settings, timeout=10) as client:
        assert client.health() == "SERVING"


def test_tls_variable_turns_tls_on(
    plain_server: ServerThread, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(TLS_ENV, "1")
    with AgentTrainingClient(plain_server.address, timeout=3) as client:
        assert_unavailable(client)  # a TLS handshake with a plaintext server


# The token -------------------------------------------------------------------------------------


def test_the_token_comes_from_agent_training_token(
    token_server: ServerThread, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(TARGET_ENV, token_server.address)
    clean_environment.setenv(TOKEN_ENV, TOKEN)
    with AgentTrainingClient(timeout=10) as client:
        assert client.list_agents().agents == []


def test_a_missing_or_wrong_token_is_unauthenticated(
    token_server: ServerThread, clean_environment: pytest.MonkeyPatch
) -> None:
    with AgentTrainingClient(token_server.address, timeout=10) as anonymous:
        error = expect_error(anonymous.list_agents)
        assert_status(error, grpc.StatusCode.UNAUTHENTICATED)
        assert error.code == "TOKEN_MISSING"
    clean_environment.setenv(TOKEN_ENV, "not-a-known-token")
    with AgentTrainingClient(token_server.address, timeout=10) as wrong:
        error = expect_error(wrong.list_agents)
        assert_status(error, grpc.StatusCode.UNAUTHENTICATED)
        assert error.code == "TOKEN_INVALID"


def test_an_explicit_token_wins_over_the_variable(
    token_server: ServerThread, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(TOKEN_ENV, "not-a-known-token")
    with AgentTrainingClient(token_server.address, token=TOKEN, timeout=10) as client:
        assert client.list_agents().agents == []
    clean_environment.setenv(TOKEN_ENV, TOKEN)
    with AgentTrainingClient(token_server.address, token="", timeout=10) as none:
        assert expect_error(none.list_agents).code == "TOKEN_MISSING"


# TLS -------------------------------------------------------------------------------------------


def test_tls_from_agent_training_ca_cert(
    tls_server: ServerThread, ca: CertificateAuthority, clean_environment: pytest.MonkeyPatch
) -> None:
    clean_environment.setenv(TARGET_ENV, tls_server.address)
    with AgentTrainingClient(timeout=3) as plaintext:
        assert_unavailable(plaintext)
    clean_environment.setenv(CA_CERT_ENV, str(ca.cert_file))
    with AgentTrainingClient(timeout=10) as client:
        assert client.health() == "SERVING"
        assert client.create_agent(agent_id="over-env-tls").agent_id == "over-env-tls"


def test_explicit_credentials_win_over_the_tls_variables(
    tls_server: ServerThread,
    ca: CertificateAuthority,
    tmp_path: Path,
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv(CA_CERT_ENV, str(tmp_path / "absent.pem"))  # never read
    credentials = tls_credentials(ca.cert_file)
    with AgentTrainingClient(tls_server.address, credentials=credentials, timeout=10) as client:
        assert client.health() == "SERVING"
    with pytest.raises(FileNotFoundError):
        AgentTrainingClient(tls_server.address)


def test_mutual_tls_from_the_client_certificate_variables(
    tmp_path: Path, ca: CertificateAuthority, clean_environment: pytest.MonkeyPatch
) -> None:
    cert, key = ca.issue("server-mtls", server=True)
    config = make_config(
        tmp_path,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_client_ca_file=str(ca.cert_file),
    )
    running = ServerThread(config)
    try:
        client_cert, client_key = ca.issue("client-env", server=False)
        clean_environment.setenv(TARGET_ENV, running.address)
        clean_environment.setenv(CA_CERT_ENV, str(ca.cert_file))
        with AgentTrainingClient(timeout=3) as anonymous:
            assert_unavailable(anonymous)
        clean_environment.setenv(CLIENT_CERT_ENV, str(client_cert))
        with pytest.raises(ValueError, match=CLIENT_KEY_ENV):
            AgentTrainingClient()
        clean_environment.setenv(CLIENT_KEY_ENV, str(client_key))
        with AgentTrainingClient(timeout=10) as client:
            assert client.list_agents().agents == []
    finally:
        running.stop()
