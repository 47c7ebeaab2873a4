"""A server starts or says why not, in one line; a job whose events cannot be stored fails.

Every start-up failure runs the real command line (``agent-training serve`` or
``agent-training-server``) and must end with a non-zero exit code, exactly one line on standard
error naming the setting to change, no traceback, no worker process left behind and not one
byte changed in the data folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, make_config
from tests.server_process import ServerProcess
from tests.test_crash_recovery import INTENTS
from tests.test_training import banking_examples

BIN = Path(sys.executable).parent
SERVER = str(BIN / "agent-training-server")
CLI = str(BIN / "agent-training")
RUNNING = training_pb2.TRAINING_STATUS_RUNNING
QUEUED = training_pb2.TRAINING_STATUS_QUEUED
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED
FAILED = training_pb2.TRAINING_STATUS_FAILED
SHORT_JOB = training_pb2.TrainingConfig(epochs=3, seed=5)
PR_CAPBSET_DROP = 24
LONG_JOB = training_pb2.TrainingConfig(
    epochs=150, batch_size=1, seed=5, early_stopping=training_pb2.EarlyStopping(patience=0)
)
"""About 10 s on one core: it outlasts the start of a second server (a few seconds)."""


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` (and the folder itself) with its size and mtime."""
    if not folder.exists():
        return {}
    entries = {".": (0, folder.stat().st_mtime_ns)}
    for path in sorted(folder.rglob("*")):
        status = path.lstat()
        entries[str(path.relative_to(folder))] = (status.st_size, status.st_mtime_ns)
    return entries


def left_behind(session: int) -> list[str]:
    """Processes still alive in the session a server was started in (its workers would be)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session and fields[0] != "Z":
                alive.append(stat.parent.name)
    return alive


def refused_start(command: list[str], unchanged: Path | None, **options) -> str:
    """Run a server command that must not start; return its one line of standard error.

    ``unchanged``: a folder that must be left exactly as it was (None: a running server's).
    """
    before = listing(unchanged) if unchanged else {}
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own session: any worker it started would be found there
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        **options,
    )
    try:
        out, err = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
    assert process.returncode != 0, (out, err)
    assert "Traceback" not in out + err, err
    assert "serving" not in out, out
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("agent-training: "), lines[0]
    assert left_behind(process.pid) == []
    if unchanged:
        assert listing(unchanged) == before
    return lines[0]


def server_command(data_dir: Path, *flags: str, cli: bool = False) -> list[str]:
    base = [CLI, "serve"] if cli else [SERVER]
    defaults = {"--address": "127.0.0.1:0", "--metrics-address": "", "--workers": "1"}
    given = dict(zip(flags[::2], flags[1::2], strict=True))
    merged = {**defaults, "--data-dir": str(data_dir), **given}
    return [*base, *(item for pair in merged.items() for item in pair)]


@contextlib.contextmanager
def busy_port() -> Iterator[int]:
    """A loopback port another process holds (a listening socket, as any server's)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture(scope="module")
def used_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder a server has used: a database with an agent in it, and the lock file."""
    folder = tmp_path_factory.mktemp("used") / "data"
    server = ServerProcess(folder, folder.parent / "server.log")
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="kept")
        assert server.terminate() == 0
    finally:
        server.kill()
    return folder


@pytest.fixture
def data_dir(used_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(used_data, copy)  # copy2: the same sizes and times
    return copy


# Start-up failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("cli", [False, True], ids=["server", "cli serve"])
def test_a_busy_grpc_port_stops_the_start(data_dir: Path, cli: bool) -> None:
    with busy_port() as port:
        line = refused_start(
            server_command(data_dir, "--address", f"127.0.0.1:{port}", cli=cli), data_dir
        )
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in line
    assert "--address (AGENT_TRAINING_ADDRESS)" in line


def test_a_busy_metrics_port_stops_the_start(data_dir: Path) -> None:
    with busy_port() as port:
        line = refused_start(
            server_command(data_dir, "--metrics-address", f"127.0.0.1:{port}"), data_dir
        )
    assert f"cannot serve metrics on 127.0.0.1:{port}: address already in use" in line
    assert "--metrics-address (AGENT_TRAINING_METRICS_ADDRESS)" in line


def test_a_metrics_address_equal_to_the_grpc_address_stops_the_start(data_dir: Path) -> None:
    with busy_port() as port:
        pass  # free again: both settings name it, and the first bind takes it
    address = f"127.0.0.1:{port}"
    command = server_command(data_dir, "--address", address, "--metrics-address", address)
    line = refused_start(command, data_dir)
    assert "--metrics-address (AGENT_TRAINING_METRICS_ADDRESS)" in line


@pytest.mark.parametrize(
    ("files", "setting"),
    [
        ({"--tls-cert-file": "missing.pem", "--tls-key-file": "missing.key"}, "--tls-cert-file"),
        ({"--tls-cert-file": "garbage.pem", "--tls-key-file": "missing.key"}, "--tls-key-file"),
        ({"--tls-cert-file": "garbage.pem", "--tls-key-file": "garbage.pem"}, "--tls-cert-file"),
        ({"--auth-token-file": "missing.json"}, "--auth-token-file"),
        ({"--auth-token-file": "folder"}, "--auth-token-file"),
        ({"--auth-token-file": "garbage.pem"}, "--auth-token-file"),
        (
            {"--auth-jwt-issuer": "https://id.test/", "--auth-jwt-key-file": "missing.pem"},
            "--auth-jwt-key-file",
        ),
        (
            {"--auth-jwt-issuer": "https://id.test/", "--auth-jwt-jwks-file": "missing.json"},
            "--auth-jwt-jwks-file",
        ),
    ],
    ids=[
        "missing certificate",
        "missing key",
        "not PEM",
        "missing token file",
        "token file is a folder",
        "token file not JSON",
        "missing JWT key",
        "missing JWKS",
    ],
)
def test_an_unreadable_security_file_stops_the_start(
    data_dir: Path, tmp_path: Path, files: dict[str, str], setting: str
) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "folder").mkdir()
    flags = [item for name, value in files.items() for item in (name, str(tmp_path / value))]
    line = refused_start(server_command(data_dir, *flags), data_dir)
    env = "AGENT_TRAINING_" + setting[2:].replace("-", "_").upper()
    assert f"{setting} ({env})" in line


def test_a_data_folder_that_is_a_file_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be\n")
    for target in (blocker, blocker / "inside"):
        line = refused_start(server_command(target), tmp_path)
        assert "--data-dir (AGENT_TRAINING_DATA_DIR)" in line


def test_an_artifact_folder_that_is_a_file_stops_the_start(tmp_path: Path) -> None:
    blocker = tmp_path / "artifacts"
    blocker.write_text("a file where the artifact folder should be\n")
    command = server_command(tmp_path / "data", "--artifact-dir", str(blocker))
    line = refused_start(command, None)
    assert "artifact folder" in line and "--artifact-dir (AGENT_TRAINING_ARTIFACT_DIR)" in line


def without_root_file_access() -> None:
    """In a root child before exec: give up root's bypass of file permissions (as any user has).

    Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that the program
    executed next runs as root without them.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_an_unwritable_data_folder_stops_the_start(data_dir: Path) -> None:
    data_dir.chmod(0o555)
    options = {"preexec_fn": without_root_file_access} if os.geteuid() == 0 else {}
    try:
        line = refused_start(server_command(data_dir), data_dir, **options)
    except subprocess.SubprocessError as error:  # no CAP_SETPCAP to give the capability up
        pytest.skip(f"cannot run the server without root's file access here: {error}")
    finally:
        data_dir.chmod(0o755)
    assert f"cannot write to data folder {data_dir}: permission denied" in line
    assert "--data-dir (AGENT_TRAINING_DATA_DIR)" in line


# One server per data folder and per port --------------------------------------------------------


def test_a_second_server_neither_shares_the_port_nor_touches_the_data(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "first.log"
    first = ServerProcess(data_dir, log)
    try:
        # Idle: the second server changes nothing in the folder, on another port or on the same.
        line = refused_start(server_command(data_dir, cli=True), data_dir)
        assert f"data folder {data_dir} is in use by another server" in line
        assert f"pid {first.process.pid}" in line and "--data-dir (AGENT_TRAINING_DATA_DIR)" in line
        other = tmp_path / "other"
        other.mkdir()
        line = refused_start(server_command(other, "--address", first.address), other)
        assert "address already in use" in line and "--address" in line

        # Training: a second server started meanwhile leaves the job alone.
        with AgentTrainingClient(first.address, timeout=60) as client:
            client.create_agent(agent_id="undisturbed")
            stream = client.train_agent(
                agent_id="undisturbed",
                training_data=banking_examples(INTENTS, per_intent=12),
                config=LONG_JOB,
                timeout=300,
            )
            seen = []
            for event in stream:
                seen.append(event)
                if event.HasField("progress") and event.progress.epoch >= 1:
                    break
            refused_start(server_command(data_dir, cli=True), None)
            # Still running: the second server came and went during the job.
            assert client.get_training_job(seen[0].training_id).status == RUNNING
            seen.extend(stream)
            training_id = seen[0].training_id
            stored = list(client.watch_training_job(training_id, 0, timeout=60))
            job = client.get_training_job(training_id)
    finally:
        assert first.terminate() == 0

    assert seen[-1].finished.status == SUCCEEDED and job.status == SUCCEEDED
    assert [event.sequence for event in stored] == list(range(1, len(stored) + 1))
    assert [event.sequence for event in seen] == [event.sequence for event in stored]
    statuses = [e.progress.status for e in stored if e.HasField("progress") and e.progress.status]
    assert QUEUED not in statuses, "a second server re-queued the running job"
    assert [t.status for t in job.timeline] == [QUEUED, RUNNING, SUCCEEDED]
    assert "IntegrityError" not in log.read_text()


def test_reuse_port_shares_the_port_only_when_asked(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "first", tmp_path / "first.log", reuse_port=1)
    try:
        second = ServerProcess(
            tmp_path / "second", tmp_path / "second.log", reuse_port="true", address=first.address
        )
        try:
            assert second.address == first.address
        finally:
            second.kill()
    finally:
        first.kill()


# Jobs whose events cannot be stored -------------------------------------------------------------


REFUSE_PROGRESS = """CREATE TRIGGER refuse_events BEFORE INSERT ON job_events
    WHEN NEW.sequence >= 3 AND NEW.kind = 'progress'
    BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"""
REFUSE_ALL = """CREATE TRIGGER refuse_events BEFORE INSERT ON job_events
    WHEN NEW.sequence >= 3
    BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"""


def event_log_failures(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("agent_training_event_log_failures_total "):
                return float(line.split()[1])
    raise AssertionError("agent_training_event_log_failures_total is not exported")


@pytest.mark.parametrize(
    "trigger", [REFUSE_PROGRESS, REFUSE_ALL], ids=["final event stored", "nothing stored"]
)
def test_a_job_whose_events_cannot_be_stored_fails_retryably_and_frees_its_worker(
    tmp_path: Path, trigger: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = ServerThread(make_config(tmp_path, workers=1))
    try:
        examples = banking_examples(INTENTS, per_intent=12)
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="unrecorded")
            with contextlib.closing(sqlite3.connect(server.config.database_path)) as db:
                db.execute(trigger)  # the job's third event on is refused by the database
                db.commit()
            events = list(
                client.train_agent(
                    agent_id="unrecorded", training_data=examples, config=SHORT_JOB, timeout=120
                )
            )
            job = client.get_training_job(events[0].training_id)
            watched = list(client.watch_training_job(job.training_id, 0, timeout=60))
            assert event_log_failures(server.running.metrics_port) == 1
            with contextlib.closing(sqlite3.connect(server.config.database_path)) as db:
                db.execute("DROP TRIGGER refuse_events")
                db.commit()
            # One worker: the next job runs only if the failed one gave it back.
            after = list(
                client.train_agent(
                    agent_id="unrecorded", training_data=examples, config=SHORT_JOB, timeout=120
                )
            )
    finally:
        server.stop()

    finished = events[-1].finished
    assert finished.status == FAILED and job.status == FAILED
    assert finished.error.code == job.error.code == "EVENT_LOG_UNAVAILABLE"
    assert finished.error.retryable and finished.error.hint
    assert "refused by the test" not in finished.error.message  # no internals for the client
    assert [event.sequence for event in events] == [1, 2, 3]
    assert [event.sequence for event in watched] == [1, 2, 3]
    assert watched[-1].finished.status == FAILED
    assert after[-1].finished.status == SUCCEEDED
    failures = [r for r in caplog.records if "events cannot be stored" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelname == "ERROR"
    assert not [r for r in caplog.records if "failed to record a message" in r.getMessage()]
