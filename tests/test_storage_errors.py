"""Storage errors over a real channel: a full data folder, and folders the server may not write.

The server runs as a real process in a user and mount namespace of its own (``unshare``), on a
small tmpfs mounted at its data folder, with no capabilities left (``setpriv``): file permissions
bind it as they bind any user who is not root. The test reaches the server's files through
``/proc/<pid>/root``: it fills the filesystem with a ballast file and deletes the file to free the
space again, and takes write permission from folders and gives it back. One server serves the
module's channel tests; where user namespaces are not allowed they are skipped, and the
classification tests at the end run everywhere.

Not made here: a filesystem that turns read-only under the running server. The kernel refuses
to remount a filesystem read-only while a file on it is open for writing (the database is), so
EROFS and SQLITE_READONLY are covered by the classification tests; over the channel, read-only is
a folder the server's user may not write (EACCES).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import errno
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent_training.v1 import analysis_pb2, training_pb2
from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_server import job_checkpoints, storage_errors
from agent_training_server.errors import StorageFull
from agent_training_server.metrics import Metrics
from agent_training_server.storage_health import HEALTH_SERVICE, StorageMonitor
from tests.conftest import BANKING77, ServerThread, assert_status, expect_error, make_config
from tests.server_process import ServerProcess, integrity_check
from tests.test_analysis import banking_test_examples
from tests.test_training import banking_examples

SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED
FAILED = training_pb2.TRAINING_STATUS_FAILED
ONE_EPOCH = training_pb2.TrainingConfig(epochs=1, seed=7)
SETTING = "--data-dir (AGENT_TRAINING_DATA_DIR)"
TMPFS_SIZE = "24m"
BIG_INTENTS = 40
"""Outputs of the training that runs out of space: its weights (about 1 MiB, its checkpoint
several) are far above the space left, its events far below."""
SPACE_LEFT = 512 * 1024
"""Bytes left free for that training: its accept and events fit (a few hundred KiB of the
database's log at most), its checkpoint does not."""

_WRAPPER = (
    'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2'
    ' && exec setpriv --inh-caps=-all --bounding-set=-all -- "$@"'
)


def _wrapper(data_dir: Path) -> list[str]:
    """Run the command in new user and mount namespaces, on a tmpfs at ``data_dir``, as a root
    that has no capabilities (so permissions hold for it)."""
    return [
        "unshare", "--user", "--map-root-user", "--mount",
        "sh", "-c", _WRAPPER, "sh", TMPFS_SIZE, str(data_dir),
    ]  # fmt: skip


def _namespaces_work(folder: Path) -> str:
    """Why the namespaced server cannot run here ("" when it can)."""
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*_wrapper(folder), "true"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"no user namespace with a tmpfs here: {done.stderr.strip()[:200]}"
    return ""


def _free_port() -> int:
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Namespaced:
    """The server process and its files as the test sees them."""

    def __init__(self, root: Path) -> None:
        self.data_dir = root / "data"
        self.data_dir.mkdir()
        self.metrics_port = _free_port()
        self.process = ServerProcess(
            self.data_dir,
            root / "server.log",
            wrapper=_wrapper(self.data_dir),
            metrics_address=f"127.0.0.1:{self.metrics_port}",
        )
        # The server's own view of its data folder: the tmpfs in its mount namespace.
        self.view = Path(f"/proc/{self.process.process.pid}/root") / self.data_dir.relative_to("/")
        self.ballast = self.view / "ballast"

    @property
    def address(self) -> str:
        return self.process.address

    def fill(self, leave: int = 0) -> None:
        """Fill the filesystem with the ballast file, leaving about ``leave`` bytes free."""
        with self.ballast.open("ab", buffering=0) as ballast:
            for chunk in (1 << 20, 4096):  # big steps, then pages up to the last one
                while self.free() - chunk >= leave:
                    try:
                        ballast.write(bytes(chunk))
                    except OSError as error:
                        assert error.errno == errno.ENOSPC
                        break
        assert self.free() <= leave + 4096

    def free_space(self) -> None:
        """Delete the ballast: the space comes back."""
        self.ballast.unlink()

    def free(self) -> int:
        stats = os.statvfs(self.view)
        return stats.f_bavail * stats.f_frsize

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"{name} is not exported")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Namespaced]:
    root = tmp_path_factory.mktemp("storage")
    reason = _namespaces_work(root / "check")
    if reason:
        pytest.skip(reason)
    running = Namespaced(root)
    yield running
    running.process.kill()


@pytest.fixture(scope="module")
def client(server: Namespaced) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made


@pytest.fixture(scope="module")
def kept(client: AgentTrainingClient) -> dict[str, object]:
    """An agent trained before any trouble, and what it answered: stored data to find intact."""
    client.create_agent(agent_id="kept")
    train(client, "kept")
    inputs = [example.input for example in banking_test_examples(per_intent=4)]
    answers = client.invoke_agent(agent_id="kept", inputs=inputs).predictions
    return {
        "agent": client.get_agent("kept"),
        "inputs": inputs,
        "outputs": [answer.output for answer in answers],
        "invocation_id": answers[0].invocation_id,
    }


def train(
    client: AgentTrainingClient, agent_id: str, data=None
) -> list[training_pb2.TrainingEvent]:
    events = list(
        client.train_agent(
            agent_id=agent_id,
            training_data=data or banking_examples(),
            config=ONE_EPOCH,
            timeout=300,
        )
    )
    assert events[-1].HasField("finished"), events[-1]
    return events


def storage_health(server: Namespaced, wanted: str) -> None:
    """Wait until the storage health service reports ``wanted`` (Watch: pushed, not polled)."""
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)
        for reply in stub.Watch(request, timeout=60):
            if health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status) == wanted:
                return


def assert_storage_full(error: AgentTrainingError, server: Namespaced) -> None:
    assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert error.code == "STORAGE_FULL" and error.retryable, error.to_dict()
    assert error.retry_delay_seconds == 30
    assert SETTING in error.hint
    assert str(server.data_dir) not in error.message + error.hint  # no paths reach a client


def assert_intact(server: Namespaced, client: AgentTrainingClient, kept: dict) -> None:
    """The database passes SQLite's check and the version trained first answers as it did."""
    assert integrity_check(server.view / "agent_training.sqlite3") == "ok"
    version = kept["agent"].active_version_id
    answers = client.invoke_agent(agent_id="kept", version_id=version, inputs=kept["inputs"])
    assert [answer.output for answer in answers.predictions] == kept["outputs"]


# A full disk ------------------------------------------------------------------------------------


def test_writes_on_a_full_disk_answer_storage_full_until_space_is_freed(server, client, kept):
    assert client.health(HEALTH_SERVICE) == "SERVING"
    assert server.metric("agent_training_storage_writable") == 1
    examples = banking_examples(per_intent=6)
    server.fill()

    assert_storage_full(expect_error(client.create_agent, agent_id="refused"), server)
    assert_storage_full(expect_error(client.upload_dataset, "refused", examples), server)
    assert_storage_full(
        expect_error(
            client.record_feedback,
            agent_id="kept",
            invocation_id=kept["invocation_id"],
            feedback="correct",
        ),
        server,
    )
    refused = expect_error(train, client, "kept", examples)
    assert_storage_full(refused, server)
    assert "This request needs about" in refused.hint  # the accept knows the data's size

    # Writes are refused, the rest serves: the overall health and the answers of stored agents.
    storage_health(server, "NOT_SERVING")
    assert client.health() == "SERVING"
    assert client.invoke_agent(agent_id="kept", inputs=kept["inputs"][:1]).predictions[0].output
    assert server.metric('agent_training_storage_errors_total{kind="full"}') >= 4
    assert server.metric("agent_training_storage_writable") == 0

    server.free_space()
    storage_health(server, "SERVING")  # the probe saw the space
    assert server.metric("agent_training_storage_writable") == 1
    client.create_agent(agent_id="after")
    assert client.upload_dataset("after", examples).example_count == len(examples)
    client.record_feedback(agent_id="kept", invocation_id=kept["invocation_id"], feedback="correct")
    assert train(client, "after", examples)[-1].finished.status == SUCCEEDED
    assert "refused" not in [agent.agent_id for agent in client.list_agents().agents]
    assert_intact(server, client, kept)


def test_a_training_that_runs_out_of_space_fails_storage_full(server, client, kept):
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as rows:
        intents = sorted({row["category"] for row in csv.DictReader(rows)})[:BIG_INTENTS]
    data = banking_examples(intents=intents, per_intent=8)
    client.create_agent(agent_id="big")
    server.fill(leave=SPACE_LEFT)

    events = train(client, "big", data)

    finished = events[-1].finished
    assert events[0].HasField("accepted")  # the job was taken: it ran out of space training
    assert finished.status == FAILED, finished
    assert finished.error.code == "STORAGE_FULL" and finished.error.retryable, finished.error
    assert SETTING in finished.error.hint and "Check the training data" not in finished.error.hint
    job = client.get_training_job(events[0].training_id)
    assert job.status == FAILED and job.error.code == "STORAGE_FULL"
    storage_health(server, "NOT_SERVING")
    # Its resumable checkpoints are gone; what it kept of its epochs stays.
    assert job_checkpoints.only_kept(server.view / "jobs" / job.training_id)
    assert not list((server.view / "artifacts" / "big").glob("*"))  # no half-written version

    server.free_space()
    storage_health(server, "SERVING")
    assert train(client, "big", data)[-1].finished.status == SUCCEEDED
    assert_intact(server, client, kept)


# Folders the server may not write ---------------------------------------------------------------


@contextlib.contextmanager
def not_writable(folder: Path) -> Iterator[None]:
    folder.mkdir(exist_ok=True)
    mode = stat.S_IMODE(folder.stat().st_mode)
    folder.chmod(0o555)
    try:
        yield
    finally:
        folder.chmod(mode)


def test_folders_the_server_may_not_write_answer_storage_read_only(server, client, kept):
    with not_writable(server.view / "jobs"):
        events = train(client, "kept")
        finished = events[-1].finished
        assert finished.status == FAILED
        assert finished.error.code == "STORAGE_READ_ONLY" and not finished.error.retryable
        assert SETTING in finished.error.hint and "train again" in finished.error.hint
        storage_health(server, "NOT_SERVING")  # the probe finds the folder unwritable too
    storage_health(server, "SERVING")
    assert train(client, "kept")[-1].finished.status == SUCCEEDED

    evaluation = banking_test_examples()
    size = client.analyze_and_optimize(
        agent_id="kept",
        optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_MINIMIZE_SIZE],
        evaluation_data=evaluation,
    ).suggestions[0]
    assert size.applicable, size
    versions = len(client.list_agent_versions("kept").versions)
    with not_writable(server.view / "artifacts" / "kept"):
        error = expect_error(
            client.analyze_and_optimize, agent_id="kept", apply_suggestion_id=size.suggestion_id
        )
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "STORAGE_READ_ONLY" and not error.retryable, error.to_dict()
    assert SETTING in error.hint and str(server.data_dir) not in error.message + error.hint
    assert len(client.list_agent_versions("kept").versions) == versions  # nothing half-made
    applied = client.analyze_and_optimize(
        agent_id="kept", apply_suggestion_id=size.suggestion_id
    ).applied_version
    assert applied.size_bytes > 0
    assert server.metric('agent_training_storage_errors_total{kind="read_only"}') >= 2
    assert_intact(server, client, kept)


def test_a_healthy_server_reports_storage_serving_through_check_and_watch(tmp_path: Path) -> None:
    server = ServerThread(make_config(tmp_path))
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)
            assert stub.Check(request, timeout=10).status == health_pb2.HealthCheckResponse.SERVING
            watch = stub.Watch(request, timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        assert (
            server.running.metrics.registry.get_sample_value("agent_training_storage_writable") == 1
        )
    finally:
        server.stop()


# Classification: real errors, made without a full disk --------------------------------------------


def test_sqlite_full_and_read_only_errors_are_named(tmp_path: Path) -> None:
    path = tmp_path / "small.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (x BLOB)")
        db.execute("PRAGMA max_page_count = 4")  # a database that cannot grow: SQLITE_FULL
        with pytest.raises(sqlite3.OperationalError) as full:
            db.execute("INSERT INTO t VALUES (?)", (bytes(100_000),))
    read_only_db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with contextlib.closing(read_only_db), pytest.raises(sqlite3.OperationalError) as read_only:
        read_only_db.execute("INSERT INTO t VALUES (1)")
    db = sqlite3.connect(path)
    with contextlib.closing(db), pytest.raises(sqlite3.OperationalError) as other:
        db.execute("SELECT * FROM missing")

    assert storage_errors.kind_of(full.value) == "full"
    assert storage_errors.kind_of(read_only.value) == "read_only"
    assert storage_errors.kind_of(other.value) is None


def test_os_errors_and_safetensors_errors_are_named() -> None:
    from safetensors import SafetensorError

    # /dev/full answers every write with ENOSPC ("r+b": never made or truncated if it is not).
    if not stat.S_ISCHR(os.stat("/dev/full").st_mode):
        pytest.skip("/dev/full is not the full device here")
    with pytest.raises(OSError) as no_space, open("/dev/full", "r+b", buffering=0) as device:
        device.write(b"x")
    # What safetensors raised writing weights on a full tmpfs (its Rust I/O error's words).
    safetensors = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )

    assert storage_errors.kind_of(no_space.value) == "full"
    assert storage_errors.kind_of(safetensors) == "full"
    assert storage_errors.kind_of(SafetensorError("Permission denied (os error 13)")) == "read_only"
    for number in (errno.EDQUOT, errno.EFBIG):
        assert storage_errors.kind_of(OSError(number, os.strerror(number), "f")) == "full"
    assert storage_errors.kind_of(OSError(errno.EROFS, "Read-only file system")) == "read_only"
    assert storage_errors.kind_of(PermissionError(errno.EACCES, "denied", "f")) == "read_only"
    # Permission errors of no file (a signal, a socket) are not about storage.
    assert storage_errors.kind_of(PermissionError(errno.EPERM, "not permitted")) is None
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "f")
        except OSError as cause:
            raise RuntimeError("the checkpoint could not be written") from cause
    except RuntimeError as wrapped:
        assert storage_errors.kind_of(wrapped) == "full"  # named by its cause
    assert storage_errors.kind_of(ValueError("a bug")) is None


def test_a_write_past_the_file_size_limit_is_full(tmp_path: Path) -> None:
    """EFBIG for real: a process whose file size limit (RLIMIT_FSIZE) the write passes."""
    script = (
        "import resource, signal, sys\n"
        "from agent_training_server import storage_errors\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit("
        "resource.RLIMIT_FSIZE)[1]))\n"
        "try:\n"
        "    with open(sys.argv[1], 'wb', buffering=0) as big:\n"
        "        while True:\n"
        "            big.write(bytes(4096))  # the one that passes the limit fails\n"
        "except OSError as error:\n"
        "    print(error.errno, storage_errors.kind_of(error))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "big")],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
    )
    assert done.stdout.split() == [str(errno.EFBIG), "full"], done.stderr


def test_the_probe_and_the_monitor_follow_the_folder(tmp_path: Path) -> None:
    assert storage_errors.probe(tmp_path) is None
    assert storage_errors.probe(tmp_path / "not" / "made") is None  # where it would be made
    assert not list(tmp_path.iterdir())  # the test write is removed
    metrics = Metrics()

    def sample(name: str, labels: dict[str, str] | None = None) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    statuses: list[str] = []
    serving = asyncio.Event()

    class Health:
        async def set(self, service: str, status: int) -> None:
            assert service == HEALTH_SERVICE
            statuses.append(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
            if statuses[-1] == "SERVING":
                serving.set()

    async def scenario() -> None:
        monitor = StorageMonitor(tmp_path, metrics, probe_seconds=0.01)
        await monitor.start(Health())  # type: ignore[arg-type]
        serving.clear()
        error = monitor.named(OSError(errno.ENOSPC, "No space left on device", "f"), 2048)
        assert isinstance(error, StorageFull)
        assert "2.0 KiB" in error.hint
        assert monitor.problem == "full"
        assert sample("agent_training_storage_writable") == 0
        await serving.wait()  # the folder takes writes: the probe turns it back
        assert monitor.problem is None
        monitor.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))
    assert statuses == ["SERVING", "NOT_SERVING", "SERVING"]
    assert sample("agent_training_storage_errors_total", {"kind": "full"}) == 1
    assert sample("agent_training_storage_errors_total", {"kind": "read_only"}) == 0
    assert sample("agent_training_storage_writable") == 1
