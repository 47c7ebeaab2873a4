"""TLS, mutual TLS, bearer tokens (token file and JWT), scopes, and the pre-tenancy migration."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agent_training.v1 import service_pb2
from agent_training_client import AgentTrainingClient, cli, tls_credentials
from agent_training_server.app import create_server
from agent_training_server.auth.scopes import METHOD_SCOPES
from agent_training_server.config import load_config
from agent_training_server.store import sqlite_schema
from agent_training_server.store.sqlite import SqliteStore
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.security_support import CertificateAuthority, Issuer, write_token_file

ADMIN_A = "token-admin-tenant-a-0001"
READER_A = "token-reader-tenant-a-0002"
ADMIN_B = "token-admin-tenant-b-0003"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("pki"))


def _serve(tmp_path: Path, **settings: object) -> ServerThread:
    return ServerThread(make_config(tmp_path, **settings))


@pytest.fixture
def tls_server(tmp_path: Path, ca: CertificateAuthority) -> Iterator[ServerThread]:
    cert, key = ca.issue("server", server=True)
    running = _serve(tmp_path, tls_cert_file=str(cert), tls_key_file=str(key))
    yield running
    running.stop()


def test_tls_serves_a_client_that_trusts_the_ca_and_refuses_plaintext(
    tls_server: ServerThread, ca: CertificateAuthority
) -> None:
    with AgentTrainingClient(
        tls_server.address, credentials=tls_credentials(ca.cert_file), timeout=10
    ) as client:
        assert client.health() == "SERVING"
        assert client.create_agent(agent_id="over-tls").agent_id == "over-tls"
    with AgentTrainingClient(tls_server.address, timeout=3) as plaintext:
        assert_unavailable(plaintext)


def test_mutual_tls_refuses_a_client_without_a_certificate(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    cert, key = ca.issue("server-mtls", server=True)
    running = _serve(
        tmp_path,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_client_ca_file=str(ca.cert_file),
    )
    try:
        client_cert, client_key = ca.issue("client-1", server=False)
        with AgentTrainingClient(
            running.address,
            credentials=tls_credentials(ca.cert_file, client_cert, client_key),
            timeout=10,
        ) as client:
            assert client.health() == "SERVING"
            assert client.list_agents().agents == []
        anonymous = tls_credentials(ca.cert_file)
        with AgentTrainingClient(running.address, credentials=anonymous, timeout=3) as client:
            assert_unavailable(client)
        stranger = CertificateAuthority(tmp_path / "other-ca", name="other-ca")
        other_cert, other_key = stranger.issue("client-2", server=False)
        foreign = tls_credentials(ca.cert_file, other_cert, other_key)
        with AgentTrainingClient(running.address, credentials=foreign, timeout=3) as client:
            assert_unavailable(client)
    finally:
        running.stop()


def assert_unavailable(client: AgentTrainingClient) -> None:
    """The call fails at the transport: no RPC reaches the service."""
    error = expect_error(client.list_agents)
    assert error.status_code == grpc.StatusCode.UNAVAILABLE, error


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[ServerThread]:
    tokens = write_token_file(
        tmp_path / "tokens.json",
        {
            ADMIN_A: ("tenant-a", ["admin"]),
            READER_A: ("tenant-a", ["agents:read"]),
            ADMIN_B: ("tenant-b", ["admin"]),
        },
    )
    running = _serve(tmp_path, auth_token_file=str(tokens))
    yield running
    running.stop()


def test_calls_without_a_valid_token_are_unauthenticated(token_server: ServerThread) -> None:
    with AgentTrainingClient(token_server.address, timeout=10) as anonymous:
        error = expect_error(anonymous.list_agents)
        assert_status(error, grpc.StatusCode.UNAUTHENTICATED)
        assert error.code == "TOKEN_MISSING"
        # Health checking and reflection stay open by default.
        assert anonymous.health() == "SERVING"
    assert "agent_training.v1.AgentTrainingService" in _reflected_services(token_server.address)
    with AgentTrainingClient(token_server.address, token="not-a-known-token", timeout=10) as c:
        error = expect_error(c.get_agent, agent_id="any")
        assert_status(error, grpc.StatusCode.UNAUTHENTICATED)
        assert error.code == "TOKEN_INVALID"
        assert expect_error(c.train_agent, agent_id="any").code == "TOKEN_INVALID"


def _reflected_services(address: str) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = stub.ServerReflectionInfo(iter([request]), timeout=10)
    return [service.name for service in response.list_services_response.service]


def test_malformed_authorization_header_is_unauthenticated(token_server: ServerThread) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        stub = AgentTrainingClient(channel=channel)._stub
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListAgents(
                service_pb2.ListAgentsRequest(),
                metadata=[("authorization", "Basic dXNlcjpwYXNz")],
                timeout=10,
            )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_without_the_scope_is_denied(token_server: ServerThread) -> None:
    with AgentTrainingClient(token_server.address, token=ADMIN_A, timeout=10) as admin:
        admin.create_agent(agent_id="scoped")
    with AgentTrainingClient(token_server.address, token=READER_A, timeout=10) as reader:
        assert reader.get_agent(agent_id="scoped").agent_id == "scoped"
        error = expect_error(reader.delete_agent, agent_id="scoped")
        assert_status(error, grpc.StatusCode.PERMISSION_DENIED)
        assert error.code == "SCOPE_MISSING" and "agents:write" in error.message
        assert "agents:read" in error.hint


def test_tenants_see_only_their_own_agents_and_request_ids(token_server: ServerThread) -> None:
    address = token_server.address
    with (
        AgentTrainingClient(address, token=ADMIN_A, timeout=10) as a,
        AgentTrainingClient(address, token=ADMIN_B, timeout=10) as b,
    ):
        a.create_agent(agent_id="a-only", request_id="same-request-id")
        # The same request_id from another tenant is another call, not a replay of A's.
        b.create_agent(agent_id="b-only", request_id="same-request-id")
        assert [x.agent_id for x in a.list_agents().agents] == ["a-only"]
        assert [x.agent_id for x in b.list_agents().agents] == ["b-only"]
        hidden = expect_error(b.get_agent, agent_id="a-only")
        missing = expect_error(b.get_agent, agent_id="nobody")
        assert_status(hidden, grpc.StatusCode.NOT_FOUND)
        assert hidden.code == missing.code == "AGENT_NOT_FOUND"
        assert hidden.hint == missing.hint
    assert _eventually(lambda: {"tenant-a", "tenant-b"} <= _span_tenants(token_server))


def _span_tenants(server: ServerThread) -> set[str]:
    spans = server.spans.get_finished_spans()
    return {s.attributes.get("agent_training.tenant") for s in spans if s.kind.name == "SERVER"}


def _eventually(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether the condition holds within some seconds (server spans end just after replies)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_health_can_require_a_token(tmp_path: Path) -> None:
    tokens = write_token_file(tmp_path / "t.json", {ADMIN_A: ("tenant-a", ["agents:read"])})
    running = _serve(tmp_path, auth_token_file=str(tokens), auth_open_services="")
    try:
        with AgentTrainingClient(running.address, timeout=10) as anonymous:
            error = expect_error(anonymous.health)
            assert_status(error, grpc.StatusCode.UNAUTHENTICATED)
        with pytest.raises(grpc.RpcError) as caught:
            _reflected_services(running.address)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with AgentTrainingClient(running.address, token=ADMIN_A, timeout=10) as client:
            assert client.health() == "SERVING"
    finally:
        running.stop()


def test_cli_sends_the_token_and_trusts_the_ca(
    tmp_path: Path,
    ca: CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert, key = ca.issue("server-cli", server=True)
    tokens = write_token_file(tmp_path / "t.json", {ADMIN_A: ("tenant-a", ["admin"])})
    running = _serve(
        tmp_path, tls_cert_file=str(cert), tls_key_file=str(key), auth_token_file=str(tokens)
    )
    base = ["--target", running.address, "--ca-cert", str(ca.cert_file)]
    try:
        monkeypatch.setenv("AGENT_TRAINING_TOKEN", ADMIN_A)
        with pytest.raises(SystemExit) as ended:
            cli.main([*base, "agents", "create", "cli-bot"])
        assert ended.value.code == 0
        monkeypatch.delenv("AGENT_TRAINING_TOKEN")
        with pytest.raises(SystemExit) as ended:
            cli.main([*base, "--token", ADMIN_A, "agents", "list"])
        assert ended.value.code == 0 and capsys.readouterr().out.splitlines()[-1].startswith(
            "cli-bot"
        )
        with pytest.raises(SystemExit) as ended:
            cli.main([*base, "agents", "list"])
        assert ended.value.code == 1 and '"TOKEN_MISSING"' in capsys.readouterr().err
    finally:
        running.stop()


def test_jwt_from_an_issuer_maps_to_its_tenant_and_scopes(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    running = _serve(
        tmp_path,
        auth_jwt_issuer=issuer.issuer,
        auth_jwt_audience="agent-training",
        auth_jwt_jwks_file=str(issuer.jwks_file),
        auth_jwt_tenant_claim="org",
    )
    try:
        writer = issuer.token(org="acme", scope="openid agents:read agents:write")
        with AgentTrainingClient(running.address, token=writer, timeout=10) as client:
            client.create_agent(agent_id="acme-bot")
            assert [x.agent_id for x in client.list_agents().agents] == ["acme-bot"]
        reader = issuer.token(org="acme", scp=["agents:read"])
        with AgentTrainingClient(running.address, token=reader, timeout=10) as client:
            assert client.get_agent(agent_id="acme-bot").agent_id == "acme-bot"
            assert expect_error(client.delete_agent, agent_id="acme-bot").code == "SCOPE_MISSING"
        other = issuer.token(org="globex", scope="admin")
        with AgentTrainingClient(running.address, token=other, timeout=10) as client:
            assert expect_error(client.get_agent, agent_id="acme-bot").code == "AGENT_NOT_FOUND"
        refused = {
            "TOKEN_EXPIRED": issuer.token(org="acme", scope="admin", exp=1),
            "TOKEN_INVALID": issuer.token(org="acme", scope="admin", aud="someone-else"),
        }
        refused["no tenant claim"] = issuer.token(scope="admin")
        refused["foreign issuer"] = Issuer(tmp_path / "..", "https://evil.test/").token(org="a")
        for name, token in refused.items():
            with AgentTrainingClient(running.address, token=token, timeout=10) as client:
                error = expect_error(client.list_agents)
                assert_status(error, grpc.StatusCode.UNAUTHENTICATED)
                if name.startswith("TOKEN_"):
                    assert error.code == name
    finally:
        running.stop()


def test_jwt_verified_with_a_public_key_file(tmp_path: Path) -> None:
    issuer = Issuer(tmp_path)
    running = _serve(
        tmp_path, auth_jwt_issuer=issuer.issuer, auth_jwt_key_file=str(issuer.key_file)
    )
    try:
        token = issuer.token(tenant="acme", scope="agents:read")
        with AgentTrainingClient(running.address, token=token, timeout=10) as client:
            assert list(client.list_agents().agents) == []
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"tls_cert_file": "server.pem"}, "tls_key_file"),
        ({"tls_client_ca_file": "ca.pem"}, "tls_cert_file"),
        ({"auth_jwt_issuer": "https://id.test/"}, "auth_jwt_key_file"),
    ],
)
def test_incomplete_security_settings_are_configuration_errors(
    settings: dict[str, str], complaint: str
) -> None:
    environ = {f"AGENT_TRAINING_{k.upper()}": v for k, v in settings.items()}
    with pytest.raises(ValueError, match=complaint):
        load_config([], environ)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ('{"tokens": [{"token": "short", "tenant": "a", "scopes": ["admin"]}]}', "16 characters"),
        (
            '{"tokens": [{"token": "long-enough-token-1", "tenant": "a", "scopes": ["root"]}]}',
            "unknown scopes",
        ),
        (
            '{"tokens": [{"token": "long-enough-token-1", "tenant": "a/b", "scopes": ["admin"]}]}',
            "tenant",
        ),
        ("not json", "not a JSON token file"),
    ],
)
def test_malformed_token_files_stop_the_start(tmp_path: Path, content: str, complaint: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    config = make_config(tmp_path, auth_token_file=str(path))
    with pytest.raises(ValueError, match=complaint):
        asyncio.run(create_server(config))


def test_every_rpc_has_a_scope() -> None:
    service = service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"]
    assert set(METHOD_SCOPES) == {method.name for method in service.methods}


def test_a_database_from_before_tenancy_opens_with_its_rows_in_the_default_tenant(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    config.data_dir.mkdir(parents=True)
    # The schema as it was: the same tables, without the tenant columns.
    db = sqlite3.connect(config.database_path)
    db.executescript(
        sqlite_schema.AGENT_SCHEMA
        + sqlite_schema.JOB_SCHEMA
        + sqlite_schema.IDEMPOTENCY_SCHEMA
        + sqlite_schema.DATASET_SCHEMA
        + sqlite_schema.FEEDBACK_SCHEMA
    )
    db.execute("INSERT INTO agents VALUES ('old-bot', 'Old', '', '{}', '{}', '', 1.0, 1.0)")
    db.execute(
        "INSERT INTO named_datasets VALUES"
        " ('ds_0123456789abcdef', 'old-set', '', 'upload', x'', 0, 0, '', 'ready', 1.0)"
    )
    db.commit()
    db.close()
    store = SqliteStore(config.database_path)
    assert store.get_agent("old-bot").tenant == "default"
    assert store.get_dataset("ds_0123456789abcdef").tenant == "default"
    store.close()
    running = ServerThread(config)  # insecure mode: every caller is tenant "default"
    try:
        with AgentTrainingClient(running.address, timeout=10) as client:
            assert client.get_agent(agent_id="old-bot").display_name == "Old"
            assert [d.name for d in client.list_datasets().datasets] == ["old-set"]
    finally:
        running.stop()
