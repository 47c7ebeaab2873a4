"""The README's quickstart runs as written, twice in a row, and prints what it shows."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.readme_quickstart import output_mismatch, quickstart_blocks, save_file
from tests.server_process import ServerProcess

README = REPO_ROOT / "README.md"
SCRATCH = REPO_ROOT / "hello-agent"  # the folder the quickstart works in (git-ignored)


def test_readme_is_a_front_door() -> None:
    assert len(README.read_bytes()) <= 15_000


def test_output_matching_finds_a_changed_line() -> None:
    actual = "job train_12 accepted: 10 examples\nprogress 50%\ndone: SUCCEEDED accuracy 0.91\n"
    assert output_mismatch("job ... accepted: 10 examples\ndone: SUCCEEDED ...", actual) is None
    assert output_mismatch("done: FAILED ...", actual) == "done: FAILED ..."
    # In order: a line shown after another must come after it.
    assert output_mismatch("done: ...\njob ...", actual) == "job ..."


def test_quickstart_blocks_are_understood() -> None:
    blocks = quickstart_blocks(README.read_text())
    languages = [block.language for block in blocks]
    assert {"sh", "python", "ts"} <= set(languages)
    assert all(block.file for block in blocks if block.language in ("python", "ts"))
    assert any(block.expected_output for block in blocks)


def _environment(address: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)  # as after `. .venv/bin/activate`
    return {
        **os.environ,
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        "AGENT_TRAINING_TARGET": address,
        "HF_HUB_OFFLINE": "1",
        "npm_config_yes": "true",
    }


def _run_quickstart(environment: dict[str, str], run: int) -> None:
    for number, block in enumerate(quickstart_blocks(README.read_text()), 1):
        if block.file:
            save_file(block, REPO_ROOT)
            continue
        if block.language != "sh":
            continue
        result = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", block.text],
            cwd=REPO_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,
        )
        where = f"run {run}, block {number}:\n{block.text}\n--- output ---\n{result.stdout}"
        assert result.returncode == 0, f"exit {result.returncode} in {where}"
        missing = output_mismatch(block.expected_output, result.stdout)
        assert missing is None, f"shown output {missing!r} not printed in {where}"


@pytest.mark.timeout(1500)
def test_quickstart_runs_as_written_twice(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail("the quickstart's TypeScript part needs Node.js and npm (see the README)")
    shutil.rmtree(SCRATCH, ignore_errors=True)
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log")
    try:
        environment = _environment(server.address)
        for run in (1, 2):
            _run_quickstart(environment, run)
    finally:
        server.terminate()
        shutil.rmtree(SCRATCH, ignore_errors=True)
