"""Graceful shutdown of a real server process: SIGTERM mid-epoch, then a restart.

Open training streams end with UNAVAILABLE and a retryable error object; the running job is
checkpointed where it is (not at its last epoch end) and goes back to QUEUED; the process exits
cleanly; after the restart the job resumes and a subscriber re-attaching misses nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent_training.v1 import service_pb2, service_pb2_grpc, training_pb2
from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_server.config import load_config
from agent_training_server.engines.checkpoint import load_checkpoint
from tests.conftest import ServerThread, make_config
from tests.server_process import ServerProcess
from tests.test_crash_recovery import CONFIG, INTENTS, until_mid_epoch
from tests.test_training import banking_examples


def watch_in_background(client: AgentTrainingClient, training_id: str) -> dict:
    """Follow a job on a second stream; the result holds its events and how it ended."""
    result: dict = {"events": [], "error": None}
    attached = threading.Event()

    def follow() -> None:
        try:
            for event in client.watch_training_job(training_id, 0, timeout=300):
                result["events"].append(event)
                attached.set()
        except AgentTrainingError as error:
            result["error"] = error
        attached.set()

    result["thread"] = threading.Thread(target=follow, daemon=True)
    result["thread"].start()
    assert attached.wait(60), "the watcher got no event"
    return result


def assert_retryable_shutdown(error: AgentTrainingError | None) -> None:
    assert error is not None, "the stream ended without an error"
    assert error.status_code == grpc.StatusCode.UNAVAILABLE, error.to_dict()
    assert error.code == "SERVER_SHUTTING_DOWN" and error.retryable, error.to_dict()
    assert "WatchTrainingJob" in error.hint and len(error.trace_id) == 32


def test_sigterm_checkpoints_running_jobs_and_ends_streams_retryably(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    examples = banking_examples(INTENTS, per_intent=40)
    # No step-count checkpoints: a mid-epoch checkpoint can only come from the shutdown.
    server = ServerProcess(data_dir, log, checkpoint_every_steps=0, shutdown_grace_seconds=5)
    try:
        # No re-attaching: the streams' own ends are under test (the client would otherwise try
        # for two minutes to re-attach to the server that is gone).
        with AgentTrainingClient(server.address, timeout=60, reattach_seconds=0) as client:
            client.create_agent(agent_id="interrupted")
            stream = client.train_agent(
                agent_id="interrupted", training_data=examples, config=CONFIG, timeout=300
            )
            seen = until_mid_epoch(stream)
            training_id = seen[0].training_id
            watcher = watch_in_background(client, training_id)
            assert server.terminate() == 0
            with pytest.raises(AgentTrainingError) as caught:
                seen.extend(stream)
            assert_retryable_shutdown(caught.value)
            # A generous bound: on a loaded machine the second stream's end can lag the first's.
            watcher["thread"].join(60)
            assert not watcher["thread"].is_alive(), "the watcher's stream did not end"
            assert_retryable_shutdown(watcher["error"])
    finally:
        server.kill()

    # Streams ended by a shutdown are not errors: nothing in the log says otherwise.
    shutdown_log = log.read_text()
    assert "Traceback" not in shutdown_log and "Failed to detach context" not in shutdown_log
    assert " ERROR " not in shutdown_log, shutdown_log

    state = load_checkpoint(data_dir / "jobs" / training_id / "checkpoints")["state"]
    last_step_seen = max(e.progress.step for e in seen if e.HasField("progress"))
    steps_per_epoch = seen[-1].progress.total_steps // CONFIG.epochs
    assert state["epoch"] * steps_per_epoch + state["step_in_epoch"] >= last_step_seen

    server = ServerProcess(data_dir, log)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            rest = list(client.watch_training_job(training_id, seen[-1].sequence + 1, timeout=300))
            everything = list(client.watch_training_job(training_id, 0, timeout=60))
            assert [e.sequence for e in seen + rest] == list(range(1, len(everything) + 1))
            assert everything[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            reasons = [t.reason for t in client.get_training_job(training_id).timeline]
            assert "server shutting down" in reasons and "server restarted" not in reasons
    finally:
        server.kill()


def test_interrupted_jobs_fail_marks_them_failed_and_retryable(tmp_path: Path) -> None:
    server = ServerThread(make_config(tmp_path))
    with AgentTrainingClient(server.address, timeout=60) as client:
        client.create_agent(agent_id="stopped")
        stream = client.train_agent(
            agent_id="stopped", training_data=banking_examples(INTENTS, 40), config=CONFIG
        )
        training_id = until_mid_epoch(stream)[0].training_id
    server.stop()  # graceful: the job is checkpointed and QUEUED

    restarted = ServerThread(make_config(tmp_path, interrupted_jobs="fail"))
    try:
        with AgentTrainingClient(restarted.address, timeout=60) as client:
            events = list(client.watch_training_job(training_id, 0, timeout=60))
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            error = events[-1].finished.error
            assert events[-1].finished.status == training_pb2.TRAINING_STATUS_FAILED
            assert error.code == "JOB_INTERRUPTED" and error.retryable and error.hint
    finally:
        restarted.stop()


def test_interrupted_jobs_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="interrupted_jobs must be resume or fail"):
        load_config(["--interrupted-jobs", "retry"], environ={})


def test_an_upload_still_open_when_the_grace_ends_gets_the_error_object(tmp_path: Path) -> None:
    """An upload whose client stalls past the grace period is answered SERVER_SHUTTING_DOWN."""
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log", shutdown_grace_seconds=2)
    stalled = threading.Event()
    try:
        channel = grpc.insecure_channel(server.address)
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)

        def messages() -> Iterator[service_pb2.UploadDatasetRequest]:
            example = training_pb2.TrainingExample(input="where is my card", expected_output="card")
            yield service_pb2.UploadDatasetRequest(name="stalled", examples=[example])
            stalled.wait(60)  # the client stops sending and never ends the stream

        upload = stub.UploadDataset.future(messages(), timeout=60)
        with AgentTrainingClient(server.address, timeout=30) as client:
            assert not client.list_datasets().datasets  # the server is serving; the upload is open
        assert server.terminate() == 0
        with pytest.raises(grpc.RpcError) as caught:
            upload.result(30)
        error = AgentTrainingError.from_rpc_error(caught.value)
        assert error.status_code == grpc.StatusCode.UNAVAILABLE, error.to_dict()
        assert error.code == "SERVER_SHUTTING_DOWN" and error.retryable, error.to_dict()
        assert "request_id" in error.hint and len(error.trace_id) == 32
    finally:
        stalled.set()
        server.kill()
    shutdown_log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in shutdown_log and " ERROR " not in shutdown_log, shutdown_log
