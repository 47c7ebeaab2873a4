"""The ``agent-training`` command line as a person uses it: the real CLI against a real server.

Every case runs the installed console script in a subprocess against a server on a free
loopback port: user errors without tracebacks, closed pipes, column detection, datasets by name,
an unreachable server, --version, -o json|table, enum spellings, progress lines and Ctrl-C.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_client.progress import phase_name
from tests.conftest import BANKING77, ServerThread, make_config

CLI = str(Path(sys.executable).with_name("agent-training"))
INTENTS = ("card_arrival", "lost_or_stolen_card", "top_up_failed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("cli"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def rows() -> list[tuple[str, str]]:
    """20 Banking77 examples of each of three intents."""
    counts: dict[str, int] = {}
    found = []
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if label in INTENTS and counts.get(label, 0) < 20:
                counts[label] = counts.get(label, 0) + 1
                found.append((row["text"], label))
    return found


def write_csv(path: Path, header: tuple[str, str], rows, delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def run(*args: str, target: str | None, cwd: Path | None = None, **env: str):
    """The CLI, as a person would type it; no terminal (stdout and stderr are pipes)."""
    command = [CLI, *(["--target", target] if target else []), *args]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    if "AGENT_TRAINING_TARGET" not in env:
        environment.pop("AGENT_TRAINING_TARGET", None)  # the target is the one given, or none
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, cwd=cwd, env=environment
    )


def error_object(stderr: str) -> dict:
    """The seed's error object the CLI printed, checked for a traceback first."""
    assert "Traceback" not in stderr, stderr
    error = json.loads(stderr)
    assert set(error) == {"code", "message", "hint", "retryable", "trace_id"}, error
    return error


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again: nothing listens there


# User errors ----------------------------------------------------------------------------------


def test_a_missing_file_is_one_error_naming_it_and_a_near_name(server, rows, tmp_path):
    write_csv(tmp_path / "train.csv", ("text", "category"), rows)
    trained = run(
        "train", "trian.csv", "--agent", "support-bot", target=server.address, cwd=tmp_path
    )
    assert trained.returncode == 1
    error = error_object(trained.stderr)
    assert error["code"] == "FILE_NOT_FOUND" and "trian.csv" in error["message"]
    assert "train.csv" in error["hint"]  # the file that was probably meant

    generated = run(
        "generate", "paraphrases", "--count", "5", "--source", "sample.csv",
        target=server.address, cwd=tmp_path,
    )  # fmt: skip
    assert generated.returncode == 1 and generated.stdout == ""
    assert error_object(generated.stderr)["code"] == "FILE_NOT_FOUND"

    folder = run("datasets", "upload", str(tmp_path), "--name", "x", target=server.address)
    assert folder.returncode == 1 and error_object(folder.stderr)["code"] == "FILE_UNREADABLE"


def test_unknown_columns_name_what_was_found_and_what_is_expected(server, rows, tmp_path):
    data = write_csv(tmp_path / "data.csv", ("utterance", "intent"), rows)
    refused = run("train", str(data), "--agent", "support-bot", target=server.address)
    assert refused.returncode == 1
    error = error_object(refused.stderr)
    assert error["code"] == "COLUMN_NOT_FOUND"
    assert "no text column among utterance, intent" in error["message"]
    assert "expected one of input, text" in error["message"]
    assert "--text-column" in error["message"]

    lines = tmp_path / "data.jsonl"
    lines.write_text("\n".join(json.dumps({"question": t, "tag": o}) for t, o in rows) + "\n")
    refused = run("datasets", "upload", str(lines), "--name", "x", target=server.address)
    error = error_object(refused.stderr)
    assert "no text column among question, tag" in error["message"]

    named = run(
        "train", str(data), "--agent", "a", "--text-column", "utterance", "--label-column",
        "label", target=server.address,
    )  # fmt: skip
    error = error_object(named.stderr)
    assert "no column 'label' (--label-column)" in error["message"]
    assert "utterance, intent" in error["message"]


def test_rows_without_a_label_are_named_by_line(server, rows, tmp_path):
    data = write_csv(tmp_path / "gaps.csv", ("text", "label"), [*rows[:3], ("no label", "")])
    refused = run("train", str(data), "--agent", "a", target=server.address)
    error = error_object(refused.stderr)
    assert error["code"] == "EXAMPLES_INCOMPLETE" and "line 5" in error["message"]


def test_bad_values_are_a_usage_line_or_an_error_object(server):
    usage = run("train", "--agent", "a", "x.csv", "--epochs", "many", target=server.address)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "argument --epochs: invalid int value: 'many'" in usage.stderr
    neither = run("train", "--agent", "a", target=server.address)
    assert neither.returncode == 2 and "give a FILE of examples or --dataset" in neither.stderr
    metric = run("adapt", "a", "--strategy", "threshold", "--metric", "oops", target=server.address)
    assert metric.returncode == 1
    assert "expected NAME=NUMBER" in error_object(metric.stderr)["message"]


def test_a_target_list_with_host_names_is_a_usage_line():
    listed = run("agents", "list", target="a.internal:50051,b.internal:50051")
    assert listed.returncode == 2 and "Traceback" not in listed.stderr
    assert "--target: target 'a.internal:50051,b.internal:50051'" in listed.stderr
    assert "dns:///name:port" in listed.stderr


def test_an_unreachable_server_says_how_to_start_one(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    refused = run("agents", "list", target=address)
    assert refused.returncode == 1
    error = error_object(refused.stderr)
    assert error["code"] == "UNAVAILABLE" and address in error["message"]
    for words in ("agent-training serve", "make run", "--target", "AGENT_TRAINING_TARGET"):
        assert words in error["hint"], error["hint"]

    from_env = run("invoke", "--agent", "a", "hi", target=None, AGENT_TRAINING_TARGET=address)
    assert address in error_object(from_env.stderr)["message"]

    # The Python client's own error carries a hint too (it was empty).
    with (
        AgentTrainingClient(address, timeout=10) as client,
        pytest.raises(AgentTrainingError) as caught,
    ):
        client.list_agents()
    assert "make run" in caught.value.hint and "AGENT_TRAINING_TARGET" in caught.value.hint


def test_server_errors_get_hints_in_cli_terms(server):
    missing = run("invoke", "--agent", "nobody", "hello", target=server.address)
    error = error_object(missing.stderr)
    assert error["code"] == "AGENT_NOT_FOUND" and error["trace_id"]
    assert "`agent-training agents create nobody`" in error["hint"]
    assert "CreateAgent" not in error["hint"]

    assert run("agents", "create", "untrained", target=server.address).returncode == 0
    untrained = error_object(
        run("invoke", "--agent", "untrained", "hi", target=server.address).stderr
    )
    assert untrained["code"] == "NO_ACTIVE_VERSION"
    assert "agent-training train FILE --agent untrained" in untrained["hint"]

    bad = run("train", "x.csv", "--agent", "untrained", "--epochs", "0", target=server.address)
    # The file is read before the call: a missing one says so first.
    assert error_object(bad.stderr)["code"] == "FILE_NOT_FOUND"


# Pipes ----------------------------------------------------------------------------------------


def test_a_closed_pipe_ends_quietly(server, rows, tmp_path):
    data = write_csv(tmp_path / "train.csv", ("text", "category"), rows)
    assert run("agents", "create", "piped", target=server.address).returncode == 0
    trained = run(
        "train", str(data), "--agent", "piped", "--follow", "--quiet", target=server.address
    )
    assert trained.returncode == 0, trained.stderr
    cli = f"{CLI} --target {server.address}"
    pipelines = [f"{cli} invoke --agent piped 'my card has not arrived' | head -1"] * 8
    pipelines += [f"{cli} invoke --agent piped 'my card has not arrived' | grep -m1 output"] * 4
    pipelines += [f"{cli} generate customer_queries --count 5000 | head -1"] * 2
    for pipeline in pipelines:
        shell = subprocess.run(
            ["bash", "-c", pipeline + "; echo status=${PIPESTATUS[0]}"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr, shell.stderr
        assert "Exception ignored" not in shell.stderr, shell.stderr
        assert re.search(r"status=(0|141)$", shell.stdout.strip()), shell.stdout


# Columns, delimiters, datasets ----------------------------------------------------------------


def test_a_semicolon_csv_with_named_columns_trains(server, rows, tmp_path):
    data = write_csv(tmp_path / "semi.csv", ("question", "tag"), rows, delimiter=";")
    assert run("agents", "create", "semi", target=server.address).returncode == 0
    trained = run(
        "train", str(data), "--agent", "semi", "--text-column", "question", "--label-column",
        "tag", "--follow", "--quiet", target=server.address,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    finished = json.loads(trained.stdout)
    assert finished["status"] == "TRAINING_STATUS_SUCCEEDED"
    assert finished["metrics"]["train_examples"] + finished["metrics"]["validation_examples"] == 60
    listed = json.loads(
        run("agents", "versions", "semi", "-o", "json", target=server.address).stdout
    )
    assert sorted(listed[0]["outputs"]) == sorted(INTENTS)  # labels, not texts


def test_train_by_dataset_name(server, rows, tmp_path):
    data = write_csv(tmp_path / "hard.tsv", ("text", "label"), rows, delimiter="\t")
    uploaded = run("datasets", "upload", str(data), "--name", "support-hard", target=server.address)
    assert uploaded.returncode == 0, uploaded.stderr
    dataset_id = json.loads(uploaded.stdout)["dataset_id"]
    assert run("agents", "create", "by-name", target=server.address).returncode == 0
    trained = run(
        "train", "--agent", "by-name", "--dataset", "support-hard", "--follow", "--quiet",
        target=server.address,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["status"] == "TRAINING_STATUS_SUCCEEDED"
    by_id = run("datasets", "get", dataset_id, target=server.address)
    by_name = run("datasets", "get", "support-hard", target=server.address)
    assert json.loads(by_id.stdout) == json.loads(by_name.stdout)

    unknown = run("train", "--agent", "by-name", "--dataset", "support-easy", target=server.address)
    error = error_object(unknown.stderr)
    assert error["code"] == "DATASET_NOT_FOUND" and "support-easy" in error["message"]
    assert "agent-training datasets list" in error["hint"]


# Output ---------------------------------------------------------------------------------------


def test_version():
    shown = run("--version", target=None)
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"agent-training {importlib.metadata.version('agent-training')}"


def test_tab_completion_offers_commands_and_flags(tmp_path):
    """What bash's completion hook (register-python-argcomplete) asks the command for."""

    def complete(line: str) -> set[str]:
        answer = tmp_path / "completion.txt"
        env = {
            **os.environ,
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_SHELL": "bash",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
        }
        done = subprocess.run([CLI], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return set(answer.read_text().split())

    assert complete("agent-training ag") == {"agents"}
    assert "--type" in complete("agent-training train --ty")


def _significant_digits(number: float) -> int:
    return len(repr(number).split("e")[0].replace("-", "").replace(".", "").strip("0"))


def test_json_has_numbers_as_numbers_and_tables_have_headers(server, rows, tmp_path):
    data = write_csv(tmp_path / "train.csv", ("text", "category"), rows)
    assert (
        run("agents", "create", "shown", "--name", "Shown bot", target=server.address).returncode
        == 0
    )
    trained = run(
        "train", str(data), "--agent", "shown", "--follow", "--quiet", target=server.address
    )
    assert trained.returncode == 0, trained.stderr

    agents = json.loads(run("agents", "list", "-o", "json", target=server.address).stdout)
    shown = next(agent for agent in agents if agent["agent_id"] == "shown")
    assert shown["version_count"] == 1 and shown["display_name"] == "Shown bot"
    jobs = json.loads(
        run("-o", "json", "jobs", "list", "--agent", "shown", target=server.address).stdout
    )
    job = json.loads(run("jobs", "get", jobs[0]["training_id"], target=server.address).stdout)
    assert isinstance(job["last_sequence"], int)  # an int64: protobuf's JSON writes a string
    assert isinstance(job["example_count"], int) and job["example_count"] == 60
    for value in job["metrics"].values():
        assert isinstance(value, int | float)
        if isinstance(value, float):
            assert _significant_digits(value) <= 6, job["metrics"]

    table = run("agents", "list", target=server.address).stdout.splitlines()
    assert table[0].split() == ["AGENT_ID", "NAME", "VERSIONS", "ACTIVE_VERSION", "UPDATED"]
    row = next(line for line in table if line.startswith("shown "))
    assert row.index(shown["active_version_id"]) == table[0].index("ACTIVE_VERSION")  # aligned
    jobs_table = run("jobs", "list", "--agent", "shown", target=server.address).stdout.splitlines()
    assert jobs_table[0].startswith("TRAINING_ID") and jobs_table[1].startswith("train_")

    fields = run("agents", "get", "shown", "-o", "table", target=server.address).stdout.splitlines()
    pairs = dict(line.split(None, 1) for line in fields)
    assert pairs["agent_id"] == "shown" and pairs["version_count"] == "1"
    assert pairs["display_name"] == "Shown bot"


def test_enum_values_take_hyphens_or_underscores(server):
    # Parsed, then refused by the server for the agent it names: the spelling was accepted.
    for flags in (("--type", "few-shot"), ("--type", "few_shot"), ("--type", "Few-Shot")):
        accepted = run("train", "--agent", "nobody", "--dataset", "ds_0123456789abcdef", *flags,
                       target=server.address)  # fmt: skip
        assert accepted.returncode == 1, accepted.stderr
        assert error_object(accepted.stderr)["code"] in {"AGENT_NOT_FOUND", "DATASET_NOT_FOUND"}
    wrong = run(
        "train", "--agent", "a", "--dataset", "d", "--type", "few-shoot", target=server.address
    )
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
    goals = run("analyze", "nobody", "--goals", "improve-calibration,maximize_coverage",
                target=server.address)  # fmt: skip
    assert error_object(goals.stderr)["code"] == "AGENT_NOT_FOUND"
    strategy = run("adapt", "nobody", "--strategy", "Threshold", "--metric", "success_rate=0.8",
                   target=server.address)  # fmt: skip
    assert error_object(strategy.stderr)["code"] == "AGENT_NOT_FOUND"
    generated = run("generate", "customer-queries", "--count", "3", "--difficulty", "hard",
                    target=server.address)  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    assert len(generated.stdout.splitlines()) == 3


# Progress -------------------------------------------------------------------------------------


PROGRESS_FIELDS = ("epoch ", "step ", "loss ", "acc ", "val_acc ", "ex/s ", "ETA ")


def test_progress_lines_off_a_terminal(server, rows, tmp_path):
    data = write_csv(tmp_path / "train.csv", ("text", "category"), rows)
    assert run("agents", "create", "progress", target=server.address).returncode == 0
    trained = run(
        "train", str(data), "--agent", "progress", "--epochs", "4", "--follow", "-o", "table",
        target=server.address,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "\r" not in trained.stderr and "\033" not in trained.stderr
    lines = trained.stderr.splitlines()
    assert lines[0].startswith("job train_") and "accepted: 60 examples, 3 outputs" in lines[0]
    bars = [line for line in lines if line.startswith("[")]
    for line in bars:
        assert all(name in line for name in PROGRESS_FIELDS), line
        assert "0/0" not in line, line
    phases = [re.search(r"%  (\S+(?: \S+)?)\s{2}", line).group(1) for line in bars]
    assert phases[0] == "loading data" and "training" in phases and "saving" in phases
    assert "100.0%" in bars[-1] and phases[-1] == "done"
    assert re.search(r"epoch +4/4", bars[-1]) and re.search(r"  acc \d\.\d{3}", bars[-1])
    # Each epoch's last report carries its figures, however fast the epoch was.
    epochs = [line for line in bars if "training" in line and re.search(r"val_acc \d", line)]
    assert len(epochs) >= 4, bars
    summary = lines[-1]
    assert re.match(
        r"job train_\w+ SUCCEEDED  accuracy \d\.\d{3}  val_acc \d\.\d{3}  loss \d", summary
    )
    assert "duration " in summary and re.search(r"version ver_\w+$", summary)
    pairs = dict(line.split(None, 1) for line in trained.stdout.splitlines())
    assert pairs["status"] == "TRAINING_STATUS_SUCCEEDED" and pairs["metrics.epochs_run"] == "4"
    assert phase_name(training_pb2.TRAINING_PHASE_LOADING_ENCODER) == "loading encoder"


def test_ctrl_c_while_following_leaves_the_job_running_and_says_how_to_come_back(
    server, rows, tmp_path
):
    data = write_csv(tmp_path / "train.csv", ("text", "category"), rows)
    assert run("agents", "create", "patient", target=server.address).returncode == 0
    # One example per step and no early stop: the job runs well past the first progress line.
    command = [
        CLI, "--target", server.address, "train", str(data), "--agent", "patient", "--epochs",
        "200", "--batch-size", "1", "--early-stopping-patience", "0", "--follow",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    seen = []
    while not seen or not seen[-1].startswith("["):
        line = process.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(seen) + err
    assert "Traceback" not in err and out == ""
    training_id = seen[0].split()[1]
    assert f"job {training_id} goes on" in err
    assert f"agent-training --target {server.address} jobs watch {training_id}" in err
    assert f"agent-training --target {server.address} jobs cancel {training_id}" in err

    with AgentTrainingClient(server.address, timeout=60) as client:
        events = list(client.watch_training_job(training_id))
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    watched = run("jobs", "watch", training_id, "--quiet", target=server.address)
    assert watched.returncode == 0 and json.loads(watched.stdout)["version_id"]
