"""docs/api.md is generated from the protos and has a working example for every RPC."""

from __future__ import annotations

import sys
from pathlib import Path

from agent_training.v1.training_pb2 import TrainingExample
from agent_training_client import AgentTrainingClient, AgentTrainingError
from tests.conftest import REPO_ROOT, TRACE_ID

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import api_docs


def test_docs_and_typescript_examples_are_fresh(tmp_path: Path) -> None:
    api_docs.ROOT = REPO_ROOT
    expected = {
        "docs/api.md": api_docs.render(),
        str(api_docs.TS_CHECK): api_docs.render_ts_check(),
    }
    for path, text in expected.items():
        assert (REPO_ROOT / path).read_text() == text, f"{path} is stale: run make api-docs"


def test_every_rpc_has_an_example() -> None:
    assert set(api_docs.EXAMPLES) == {method.name for method in api_docs.SERVICE.methods}


def test_python_examples_run(client: AgentTrainingClient) -> None:
    """Each Python example reaches the server: it may be refused (its ids name nothing), but its
    method and arguments are right."""
    for rpc in api_docs.SERVICE.methods:
        code = api_docs.python_example(rpc, api_docs.EXAMPLES[rpc.name])
        names = {"client": client, "TrainingExample": TrainingExample, "print": lambda _: None}
        try:
            exec(code, names)
        except AgentTrainingError as error:
            assert TRACE_ID.match(error.trace_id), (rpc.name, error)
