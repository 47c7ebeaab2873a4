"""Training an agent: the rules between a TrainAgent request and the job manager.

The handler checks the request's shape and converts it into a `TrainingOrder`; this service
applies the domain rules that need the store, then submits the job and follows its events:

- a stored dataset's examples replace the inline ones, checked by the same example checker;
- the training type must have an engine (the engine registry is the one list of them);
- few_shot on an agent whose active version uses the pretrained encoder extends that version;
- transfer's base agent is resolved and its version pinned, so a retry or resume uses it.

The path reads straight down: handler -> TrainingService -> JobManager -> executor -> engine.
Reads of jobs are of the caller's tenant's agents, as every read in the services layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

from agent_training_server.auth import current_tenant
from agent_training_server.checks import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.domain import Agent, JobEvent, Page, RolloutRequest, TrainingJob
from agent_training_server.engines import registry
from agent_training_server.engines.base import Example, TrainSettings
from agent_training_server.engines.pretrained import ENCODER_NAME
from agent_training_server.errors import FailedPrecondition, NotFound, Unimplemented
from agent_training_server.example_checks import (
    check_extended_outputs,
    check_few_shot_outputs,
    check_training_examples,
)
from agent_training_server.services.agents import AgentService
from agent_training_server.services.datasets import DatasetService
from agent_training_server.services.jobs import JobManager

SERVED_TRAINING_TYPES = frozenset(registry.available_training_types())
"""The training types this server trains: those with an engine in the registry."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainingOrder:
    """A TrainAgent request, converted: what to train, on what, how."""

    agent_id: str
    training_type: str
    """An engine's training type ("supervised", "few_shot", ...)."""
    settings: TrainSettings
    examples: Sequence[Example] = ()
    """The inline examples; empty when `dataset_id` names them."""
    dataset_id: str = ""
    request_id: str = ""
    request_bytes: bytes = b""
    """The serialised request, to tell a retry from another request with its request_id."""
    rollout: RolloutRequest | None = None
    """Start this rollout with the job's version instead of activating it."""


class TrainingService:
    """Starts training jobs and reads, lists, cancels and watches the caller's jobs."""

    def __init__(
        self,
        agents: AgentService,
        datasets: DatasetService,
        jobs: JobManager,
        config: ServerConfig,
    ) -> None:
        self._agents = agents
        self._datasets = datasets
        self._jobs = jobs
        self._config = config

    async def train(self, order: TrainingOrder) -> AsyncIterator[JobEvent]:
        """Start a job and yield its events to its end (the first one says it was accepted).

        A consumer that stops reading leaves the job running.

        Raises:
            NotFound: the agent, the dataset or the transfer base is missing.
            InvalidArgument: the dataset's examples break the example rules.
            FailedPrecondition, Unimplemented: the rules above refuse the order.
        """
        examples = list(order.examples)
        if order.dataset_id:
            examples = await self._dataset_examples(order.dataset_id, order.training_type)
        if order.training_type not in SERVED_TRAINING_TYPES:
            raise Unimplemented(
                f"training_type {order.training_type} is not served by this server release",
                hint="Use a TRAINING_TYPE_ value the contract lists.",
            )
        agent = await self._agents.get(order.agent_id)
        if order.training_type == "few_shot":
            await self._check_few_shot(agent, examples)
        settings = order.settings
        if order.training_type != "reinforcement":  # it learns from rewards, not labels
            # Examples labelled with the fallback output teach what not to answer.
            settings = dataclasses.replace(
                settings, negative_output=agent.default_behavior.fallback_output
            )
        if order.training_type == "transfer" and settings.base_agent_id:
            settings = await self._resolve_base(settings)
        job = await self._jobs.submit(
            agent_id=agent.agent_id,
            training_type=order.training_type,
            examples=examples,
            settings=settings,
            parent_version_id=agent.active_version_id,
            request_id=order.request_id,
            request_bytes=order.request_bytes,
            rollout=order.rollout,
        )
        async for event in self._jobs.watch(job.training_id, 1):
            yield event

    async def _dataset_examples(self, dataset_id: str, training_type: str) -> list[Example]:
        """A stored dataset's examples, checked as if they had come inline."""
        examples = await self._datasets.training_examples(dataset_id)
        checker = Checker()
        check_training_examples(
            checker,
            examples,
            self._config,
            max_examples=self._config.max_dataset_examples,
            labelled=training_type != "reinforcement",
            few_shot=training_type == "few_shot",
        )
        checker.raise_if_any()
        return examples

    async def _check_few_shot(self, agent: Agent, examples: Sequence[Example]) -> None:
        """few_shot extends an active version that uses the pretrained encoder."""
        extends = False
        if agent.active_version_id:
            active = await self._agents.get_version(agent.agent_id, agent.active_version_id)
            extends = active.encoder.get("name") == ENCODER_NAME
            if extends:
                check_extended_outputs(examples, active.outputs, self._config.max_outputs_per_agent)
        check_few_shot_outputs(examples, extends)

    async def _resolve_base(self, settings: TrainSettings) -> TrainSettings:
        """Check the transfer base and pin its version, so a retry or resume uses the same one."""
        try:
            base = await self._agents.get(settings.base_agent_id)
        except NotFound as error:
            raise NotFound(
                f"base agent {settings.base_agent_id!r} of config.base_agent_id does not exist",
                code="BASE_AGENT_NOT_FOUND",
                hint="Name an existing agent trained with few_shot or transfer, or leave"
                " config.base_agent_id empty to start from the pretrained encoder.",
            ) from error
        version_id = settings.base_version_id or base.active_version_id
        if not version_id:
            raise FailedPrecondition(
                f"base agent {base.agent_id!r} has no trained version",
                code="BASE_AGENT_UNTRAINED",
                hint="Train the base agent first, or name config.base_version_id.",
            )
        version = await self._agents.get_version(base.agent_id, version_id)
        if version.encoder.get("name") != ENCODER_NAME:
            raise FailedPrecondition(
                f"base version {version_id!r} uses the {version.encoder.get('name')} encoder",
                code="BASE_ENCODER_NOT_TRANSFERABLE",
                hint="Transfer reuses a pretrained-encoder version (trained with few_shot or"
                " transfer); leave config.base_agent_id empty to start from the pretrained"
                " encoder.",
            )
        return dataclasses.replace(settings, base_version_id=version_id)

    # The caller's jobs ---------------------------------------------------------------------

    async def job(self, training_id: str) -> TrainingJob:
        """The caller's job. Raises NotFound (TRAINING_JOB_NOT_FOUND) for another tenant's."""
        return await self._jobs.get(training_id, current_tenant())

    async def jobs(
        self, agent_id: str, statuses: tuple[str, ...], page_size: int, before_position: int
    ) -> Page[TrainingJob]:
        """A page of the caller's jobs (of one agent when `agent_id` is set), newest first."""
        return await self._jobs.list(
            agent_id, statuses, page_size, before_position, current_tenant()
        )

    async def cancel(self, training_id: str) -> TrainingJob:
        """Cancel the caller's job; return it as it ended."""
        await self.job(training_id)
        return await self._jobs.cancel(training_id)

    async def pause(self, training_id: str) -> TrainingJob:
        """Pause the caller's job; return it (PAUSED once its worker has checkpointed)."""
        await self.job(training_id)
        return await self._jobs.pause(training_id)

    async def resume(self, training_id: str) -> TrainingJob:
        """Queue the caller's paused job again; return it."""
        await self.job(training_id)
        return await self._jobs.resume(training_id)

    async def watch(self, training_id: str, from_sequence: int) -> AsyncIterator[JobEvent]:
        """The events of the caller's job from `from_sequence` to its end."""
        await self.job(training_id)
        async for event in self._jobs.watch(training_id, from_sequence):
            yield event
