"""The in-memory read cache of InvokeAgent's lookups: used until the store's next write."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent_training_server.domain import Agent, AgentVersion, Feedback, Invocation
from agent_training_server.errors import NotFound
from agent_training_server.store.read_cache import ReadCache
from agent_training_server.store.sqlite import SqliteStore


def _version(agent_id: str, version_id: str) -> AgentVersion:
    return AgentVersion(
        version_id=version_id,
        agent_id=agent_id,
        version_number=0,
        source="training",
        training_type="supervised",
        outputs=("a", "b"),
    )


def _counted_cache(tmp_path: Path) -> tuple[SqliteStore, ReadCache, list]:
    """A store with agent a1 (ver_1 active), a cache of its lookups, and the reads it made."""
    store = SqliteStore(tmp_path / "store.db")
    store.create_agent(Agent(agent_id="a1", create_time=0.0, update_time=0.0))
    store.add_version(_version("a1", "ver_1"), activate=True)
    reads: list[tuple[str, str]] = []

    def read(agent_id: str, version_id: str):
        reads.append((agent_id, version_id))
        return store.agent_with_version(agent_id, version_id)

    return store, ReadCache(read, lambda: store.commits), reads


def test_reads_are_kept_until_a_write_commits(tmp_path: Path) -> None:
    store, cache, reads = _counted_cache(tmp_path)
    assert cache.get("a1", "")[1].version_id == "ver_1"
    assert cache.get("a1", "")[1].version_id == "ver_1"
    assert len(reads) == 1

    store.add_version(_version("a1", "ver_2"), activate=True)
    assert cache.get("a1", "")[1].version_id == "ver_2"
    store.activate_version("a1", "ver_1")
    assert cache.get("a1", "")[1].version_id == "ver_1"
    assert len(reads) == 3

    store.delete_agent("a1")
    with pytest.raises(NotFound):
        cache.get("a1", "")
    with pytest.raises(NotFound):  # errors are not kept: the store is asked again
        cache.get("a1", "")
    assert len(reads) == 5


def test_answers_and_feedback_leave_the_cache_alone(tmp_path: Path) -> None:
    """Answers are stored behind every few milliseconds under load: they change no agent."""
    store, cache, reads = _counted_cache(tmp_path)
    cache.get("a1", "")
    answer = Invocation(
        invocation_id="inv_1",
        agent_id="a1",
        version_id="ver_1",
        input="hello",
        output="a",
        confidence=0.9,
        propensity=1.0,
    )
    store.record_invocations([answer])
    store.record_feedback(
        Feedback(
            feedback_id="fb_1",
            invocation_id="inv_1",
            agent_id="a1",
            feedback="correct",
            reward=1.0,
            corrected_output="",
            comment="",
            time=0.0,
        )
    )
    assert cache.get("a1", "")[1].version_id == "ver_1"
    assert len(reads) == 1
    assert store.get_invocation("inv_1").output == "a"  # the writes did commit
