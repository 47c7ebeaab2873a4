"""Dynamic micro-batching: concurrent InvokeAgent calls for one version scored in one pass.

A model answers a batch of inputs for little more than the cost of one (an encoder's forward
pass, the n-gram featuriser's numpy calls), and each hop to a worker thread costs about as much
as scoring one short input. So calls wait in a queue per version, and one runner per version
scores what has queued in a single hop: while a batch is being scored, the calls that arrive
meanwhile form the next one. An idle server thus answers a lone call at once, and a busy one
answers many calls per pass without any added wait. ``max_wait`` can add a bounded wait for
others to join a batch that is not full, for models where a bigger batch pays (encoders).

Every input is scored as it would be alone: models score the rows of a batch independently.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, Protocol, Self, TypeVar

V = TypeVar("V")


class Rows(Protocol):
    """Scores of a batch, one row per text, that can be cut into each call's rows."""

    def __getitem__(self, rows: slice, /) -> Self: ...


R = TypeVar("R", bound=Rows)


@dataclasses.dataclass
class _Call(Generic[R]):
    texts: Sequence[str]
    answer: asyncio.Future[tuple[R, float]]


class MicroBatcher(Generic[V, R]):
    """Scores concurrent calls for the same version together, on a worker thread.

    ``score(version, texts)`` runs on a worker thread and returns one row per text (a numpy
    array, or anything cut into rows by slicing). A call's inputs are never split across
    batches; a call with more than ``max_inputs`` is a batch alone.
    """

    def __init__(
        self,
        score: Callable[[V, list[str]], R],
        key: Callable[[V], Hashable],
        max_inputs: int = 64,
        max_wait: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
        inline: Callable[[V, int], bool] = lambda version, inputs: False,
    ) -> None:
        """``on_batch(calls, inputs)`` is told the size of each batch scored (for metrics).

        ``inline(version, inputs)`` says when a batch is scored on the event loop itself, for
        models that score a batch faster than a hop to a worker thread and back.
        """
        self._score = score
        self._inline = inline
        self._key = key
        self._max_inputs = max_inputs
        self._max_wait = max_wait
        self._on_batch = on_batch
        self._queues: dict[Hashable, collections.deque[_Call[R]]] = {}
        self._runners: set[asyncio.Future[None]] = set()

    async def score(self, version: V, texts: Sequence[str]) -> tuple[R, float]:
        """Rows for ``texts`` and the seconds their batch took to score (on the event loop)."""
        key = self._key(version)
        queue = self._queues.get(key)
        call = _Call(texts, asyncio.get_running_loop().create_future())
        if queue is None:
            # No runner for this version: this call starts one, which ends when the queue empties.
            queue = self._queues[key] = collections.deque([call])
            runner = asyncio.ensure_future(self._run(key, version, queue))
            self._runners.add(runner)  # a task only weakly referenced can be collected
            runner.add_done_callback(self._runners.discard)
        else:
            queue.append(call)
        return await call.answer

    async def _run(self, key: Hashable, version: V, queue: collections.deque[_Call[R]]) -> None:
        try:
            while queue:
                if self._max_wait > 0 and _inputs(queue) < self._max_inputs:
                    await asyncio.sleep(self._max_wait)
                calls = self._take(queue)
                await self._answer(version, calls)
        finally:
            del self._queues[key]
            for call in queue:  # left by a cancelled runner (shutdown)
                call.answer.cancel()

    def _take(self, queue: collections.deque[_Call[R]]) -> list[_Call[R]]:
        """The first calls of the queue, as many as fit in one batch (at least one)."""
        calls = [queue.popleft()]
        inputs = len(calls[0].texts)
        while queue and inputs + len(queue[0].texts) <= self._max_inputs:
            inputs += len(queue[0].texts)
            calls.append(queue.popleft())
        return calls

    async def _answer(self, version: V, calls: list[_Call[R]]) -> None:
        texts = [text for call in calls for text in call.texts]
        try:
            if self._inline(version, len(texts)):
                rows, seconds = self._timed_score(version, texts)
            else:
                rows, seconds = await asyncio.to_thread(self._timed_score, version, texts)
        except BaseException as error:
            for call in calls:
                if not call.answer.done():
                    call.answer.set_exception(error)
            if not isinstance(error, Exception):
                raise  # cancellation (shutdown): the runner stops with it
            return
        if self._on_batch is not None:
            self._on_batch(len(calls), len(texts))
        start = 0
        for call in calls:
            end = start + len(call.texts)
            if not call.answer.done():  # a caller that went away leaves a cancelled future
                call.answer.set_result((rows[start:end], seconds))
            start = end

    def _timed_score(self, version: V, texts: list[str]) -> tuple[R, float]:
        started = time.perf_counter()
        rows = self._score(version, texts)
        return rows, time.perf_counter() - started


def _inputs(queue: collections.deque[_Call[R]]) -> int:
    return sum(len(call.texts) for call in queue)
