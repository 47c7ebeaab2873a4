"""Concurrent InvokeAgent calls scored together: each answer as if scored alone, none lost."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time

import numpy as np
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server.services.micro_batching import MicroBatcher
from tests.conftest import ServerThread, make_config
from tests.test_metrics import scrape, value
from tests.test_training import INTENTS, banking_examples

TEXTS = [
    "my card has not arrived yet",
    "I lost my card",
    "what exchange rate do you use",
    "my top up failed",
    "where is my new card",
    "someone stole my card",
    "is the rate good today",
    "the top-up did not work",
]


def _answer(prediction) -> tuple:
    return (
        prediction.output,
        prediction.confidence,
        prediction.is_fallback,
        [(alt.output, alt.confidence) for alt in prediction.alternatives],
    )


def test_concurrent_calls_are_batched_and_answered_as_alone(tmp_path) -> None:
    # A bounded wait makes the batches certain: calls sent together join one.
    running = ServerThread(make_config(tmp_path, invoke_batch_wait_ms=50.0))
    try:
        with AgentTrainingClient(running.address, timeout=60) as client:
            client.create_agent(agent_id="batched")
            events = list(
                client.train_agent(agent_id="batched", training_data=banking_examples(INTENTS))
            )
            assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            texts = TEXTS * 4

            def invoke(text: str):
                return client.invoke_agent(agent_id="batched", inputs=[text]).predictions[0]

            with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
                together = list(pool.map(invoke, texts))
            alone = [invoke(text) for text in texts]
            samples = scrape(running.running.metrics_port)
        batches = value(samples, "agent_training_invoke_batch_calls_count")
        calls = value(samples, "agent_training_invoke_batch_calls_sum")
        assert calls == 2 * len(texts)
        assert batches < calls, "no call was scored together with another"
        assert [_answer(p) for p in together] == [_answer(p) for p in alone]
        ids = {p.invocation_id for p in together + alone}
        assert len(ids) == 2 * len(texts)
    finally:
        running.stop()
    # Every answer given was stored (the write-behind flushes at shutdown).
    with sqlite3.connect(running.config.data_dir / "agent_training.sqlite3") as db:
        stored = {row[0] for row in db.execute("SELECT invocation_id FROM invocations")}
    assert ids <= stored


def _batcher(scored: list[list[str]], max_inputs: int = 4, fail: str = "") -> MicroBatcher:
    def score(version: str, texts: list[str]) -> np.ndarray:
        if fail in texts:
            raise ValueError("bad input")
        time.sleep(0.01)  # long enough for the next calls to queue
        scored.append(texts)
        return np.array([[float(len(text))] for text in texts])

    return MicroBatcher(score, key=lambda version: version, max_inputs=max_inputs)


def test_batches_are_bounded_and_a_large_call_is_scored_alone() -> None:
    scored: list[list[str]] = []

    async def run() -> list:
        batcher = _batcher(scored)
        calls = [["a"], ["bb"], ["ccc"], ["d", "e", "f"], list("ghijklmn"), ["o"]]
        return await asyncio.gather(*(batcher.score("v1", texts) for texts in calls))

    results = asyncio.run(run())
    assert [list(rows[:, 0]) for rows, _seconds in results] == [
        [1.0], [2.0], [3.0], [1.0, 1.0, 1.0], [1.0] * 8, [1.0]
    ]  # fmt: skip
    # Calls made in one turn of the loop share a batch up to 4 inputs; 8 are scored alone.
    assert scored == [["a", "bb", "ccc"], ["d", "e", "f"], list("ghijklmn"), ["o"]]


def test_an_error_reaches_every_call_of_its_batch_and_no_other() -> None:
    scored: list[list[str]] = []

    async def run() -> list:
        batcher = _batcher(scored, fail="bad")
        first = asyncio.ensure_future(batcher.score("v1", ["first"]))
        await asyncio.sleep(0)  # scoring "first": the next two queue and form one batch
        queued = [batcher.score("v1", ["bad"]), batcher.score("v1", ["fine"])]
        return await asyncio.gather(first, *queued, return_exceptions=True)

    first, bad, fine = asyncio.run(run())
    assert first[0][0, 0] == 5.0
    assert isinstance(bad, ValueError) and isinstance(fine, ValueError)


def test_versions_are_batched_apart() -> None:
    scored: list[list[str]] = []

    async def run() -> None:
        batcher = _batcher(scored, max_inputs=64)
        await asyncio.gather(*(batcher.score(f"v{i % 2}", [f"t{i}"]) for i in range(6)))

    asyncio.run(run())
    for batch in scored:
        assert len({int(text[1:]) % 2 for text in batch}) == 1


@pytest.mark.parametrize("wait", [0.0, 0.02])
def test_a_lone_call_is_answered(wait: float) -> None:
    async def run() -> float:
        batcher = MicroBatcher(
            lambda version, texts: np.ones((len(texts), 1)), key=str, max_wait=wait
        )
        started = time.perf_counter()
        await batcher.score("v1", ["x"])
        return time.perf_counter() - started

    assert asyncio.run(run()) >= wait


def _answers(count: int, agent_id: str = "a1") -> list:
    from agent_training_server.domain import Invocation

    return [
        Invocation(
            invocation_id=f"inv_{index}",
            agent_id=agent_id,
            version_id="ver_1",
            input="hello",
            output="a",
            confidence=0.9,
            propensity=1.0,
        )
        for index in range(count)
    ]


def test_answers_past_the_memory_bound_are_counted_and_logged_not_lost_silently(
    tmp_path, caplog
) -> None:
    from agent_training_server.domain import Agent
    from agent_training_server.metrics import Metrics
    from agent_training_server.services.feedback import FeedbackService
    from agent_training_server.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "store.db")
    store.create_agent(Agent(agent_id="a1", create_time=0.0, update_time=0.0))
    metrics = Metrics()

    async def run() -> None:
        feedback = FeedbackService(store, metrics, max_unstored=5)
        answers = _answers(8)
        feedback.remember(answers[:3])
        feedback.remember(answers[3:])  # 2 fit, 3 are shed
        await feedback.stop()
        feedback.remember(_answers(1, "a1")[:1])  # room again: recorded, and said so
        await feedback.stop()

    with caplog.at_level("WARNING", logger="agent_training_server.services.feedback"):
        asyncio.run(run())
    stored = {i.invocation_id for i in _answers(8) if _stored(store, i.invocation_id)}
    assert stored == {f"inv_{index}" for index in range(5)}
    assert metrics.answers_unrecorded._value.get() == 3
    messages = [record.getMessage() for record in caplog.records]
    assert sum("not being recorded" in message for message in messages) == 1
    assert any("recorded again" in message for message in messages)


def test_answers_wait_in_memory_while_the_store_fails_and_are_stored_after(
    tmp_path, caplog, monkeypatch
) -> None:
    from agent_training_server.domain import Agent
    from agent_training_server.services import feedback as feedback_module
    from agent_training_server.store.sqlite import SqliteStore

    monkeypatch.setattr(feedback_module, "RETRY_SECONDS", 0.05)
    store = SqliteStore(tmp_path / "store.db")
    store.create_agent(Agent(agent_id="a1", create_time=0.0, update_time=0.0))
    # Another connection holds the file's write lock: the store's writes fail (busy) meanwhile.
    blocker = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    store._database._connection.execute("PRAGMA busy_timeout=10")

    async def run() -> None:
        service = feedback_module.FeedbackService(store)
        blocker.execute("BEGIN IMMEDIATE")
        service.remember(_answers(3))
        await asyncio.sleep(0.5)  # several failed attempts
        assert not _stored(store, "inv_0")
        blocker.execute("COMMIT")
        await asyncio.sleep(0.5)
        assert all(_stored(store, f"inv_{index}") for index in range(3))
        await service.stop()

    with caplog.at_level("WARNING", logger="agent_training_server.services.feedback"):
        asyncio.run(run())
    messages = [record.getMessage() for record in caplog.records]
    assert sum("storing answers failed" in message for message in messages) == 1
    assert any("stored again" in message for message in messages)


def _stored(store, invocation_id: str) -> bool:
    from agent_training_server.errors import NotFound

    try:
        store.get_invocation(invocation_id)
    except NotFound:
        return False
    return True
