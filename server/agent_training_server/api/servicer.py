"""The gRPC servicer: thin handlers that validate, convert and call the domain services.

Handlers raise domain errors; ErrorTranslationInterceptor turns them into rich statuses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import grpc
from opentelemetry import trace

from agent_training.v1 import adaptation_pb2, service_pb2, service_pb2_grpc, training_pb2
from agent_training_server.api import analysis_requests, convert, validation
from agent_training_server.api.synthetic_handlers import SyntheticHandlers, idempotency_key
from agent_training_server.api.tenancy import TenantGuard
from agent_training_server.api.validation import Checker
from agent_training_server.auth import current_principal, current_tenant
from agent_training_server.auth.interceptor import check_scope
from agent_training_server.config import ServerConfig
from agent_training_server.domain import AnalysisStatus
from agent_training_server.engines.base import TrainSettings
from agent_training_server.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unimplemented,
)
from agent_training_server.services import analysis_jobs
from agent_training_server.services.adaptation import AdaptationService
from agent_training_server.services.agents import AgentService
from agent_training_server.services.analysis import AnalysisService
from agent_training_server.services.analysis_jobs import AnalysisJobs
from agent_training_server.services.datasets import DatasetService
from agent_training_server.services.feedback import FeedbackService
from agent_training_server.services.inference import InferenceService
from agent_training_server.services.jobs import JobManager
from agent_training_server.services.synthetic import SyntheticService
from agent_training_server.telemetry import INSTRUMENTATION_NAME, child_span

Context = grpc.aio.ServicerContext
SERVED_TRAINING_TYPES = ("supervised", "few_shot", "reinforcement", "transfer")


class AgentTrainingServicer(SyntheticHandlers, service_pb2_grpc.AgentTrainingServiceServicer):
    """Serves agent_training.v1.AgentTrainingService."""

    def __init__(
        self,
        config: ServerConfig,
        agents: AgentService,
        jobs: JobManager,
        inference: InferenceService,
        datasets: DatasetService,
        synthetic: SyntheticService,
        analysis: AnalysisService,
        feedback: FeedbackService,
        adaptation: AdaptationService,
        analysis_jobs: AnalysisJobs,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._config = config
        self._tracer = tracer or trace.get_tracer(INSTRUMENTATION_NAME)
        self._agents = agents
        self._jobs = jobs
        self._inference = inference
        self._datasets = datasets
        self._synthetic = synthetic
        self._analysis = analysis
        self._feedback = feedback
        self._adaptation = adaptation
        self._analysis_jobs = analysis_jobs
        self._guard = TenantGuard(agents, jobs, datasets, feedback, analysis_jobs)

    # Agents -------------------------------------------------------------------------------

    async def CreateAgent(  # noqa: D102
        self, request: service_pb2.CreateAgentRequest, context: Context
    ) -> service_pb2.CreateAgentResponse:
        with child_span(self._tracer, "validate", **{"rpc.method": "CreateAgent"}):
            validation.check_create_agent(request)
        agent = await self._agents.create(
            agent_id=request.agent_id,
            display_name=request.display_name,
            description=request.description,
            labels=dict(request.labels),
            default_behavior=convert.behavior_from_proto(request.default_behavior),
            request_id=request.request_id,
            request_bytes=request.SerializeToString(deterministic=True),
        )
        return service_pb2.CreateAgentResponse(agent=convert.agent_to_proto(agent))

    async def GetAgent(  # noqa: D102
        self, request: service_pb2.GetAgentRequest, context: Context
    ) -> service_pb2.GetAgentResponse:
        validation.check_agent_id_only(request.agent_id)
        agent = await self._guard.agent(request.agent_id)
        return service_pb2.GetAgentResponse(agent=convert.agent_to_proto(agent))

    async def ListAgents(  # noqa: D102
        self, request: service_pb2.ListAgentsRequest, context: Context
    ) -> service_pb2.ListAgentsResponse:
        checker = Checker()
        position = checker.page(request.page_size, request.page_token, self._config)
        checker.raise_if_any()
        page = await self._agents.list(
            validation.page_size_or_default(request.page_size),
            str(position.get("after", "")),
            current_tenant(),
        )
        return service_pb2.ListAgentsResponse(
            agents=[convert.agent_to_proto(agent) for agent in page.items],
            next_page_token=_token({"after": page.next_page_token}, page.next_page_token),
        )

    async def DeleteAgent(  # noqa: D102
        self, request: service_pb2.DeleteAgentRequest, context: Context
    ) -> service_pb2.DeleteAgentResponse:
        validation.check_agent_id_only(request.agent_id)
        await self._guard.agent(request.agent_id)
        unfinished = self._jobs.running_jobs_of(request.agent_id)
        if unfinished and not request.force:
            raise FailedPrecondition(
                f"agent {request.agent_id!r} has {len(unfinished)} queued or running jobs",
                code="AGENT_HAS_RUNNING_JOBS",
                hint="Cancel them first, or pass force=true to cancel them and delete.",
            )
        for job in unfinished:
            await self._jobs.cancel(job.training_id)
        await self._jobs.delete_agent_jobs(request.agent_id, self._agents.delete)
        return service_pb2.DeleteAgentResponse()

    async def ListAgentVersions(  # noqa: D102
        self, request: service_pb2.ListAgentVersionsRequest, context: Context
    ) -> service_pb2.ListAgentVersionsResponse:
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        position = checker.page(request.page_size, request.page_token, self._config)
        before = position.get("before", 0)
        if not isinstance(before, int) or before < 0:
            checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        await self._guard.agent(request.agent_id)
        page, active = await self._agents.list_versions(
            request.agent_id, validation.page_size_or_default(request.page_size), before
        )
        next_before = int(page.next_page_token or 0)
        return service_pb2.ListAgentVersionsResponse(
            versions=[convert.version_to_proto(v, active) for v in page.items],
            next_page_token=_token({"before": next_before}, page.next_page_token),
        )

    async def ActivateAgentVersion(  # noqa: D102
        self, request: service_pb2.ActivateAgentVersionRequest, context: Context
    ) -> service_pb2.ActivateAgentVersionResponse:
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        checker.resource_id("version_id", request.version_id)
        checker.raise_if_any()
        await self._guard.agent(request.agent_id)
        agent = await self._agents.activate(request.agent_id, request.version_id)
        return service_pb2.ActivateAgentVersionResponse(agent=convert.agent_to_proto(agent))

    # Training -----------------------------------------------------------------------------

    async def TrainAgent(  # noqa: D102
        self, request: service_pb2.TrainAgentRequest, context: Context
    ) -> AsyncIterator[service_pb2.TrainAgentResponse]:
        with child_span(self._tracer, "validate", **{"rpc.method": "TrainAgent"}):
            validation.check_train_agent(request, self._config)
        if request.dataset_id:
            # Train on a stored dataset: validated as if its examples had come inline.
            stored = await self.dataset_training_data(request.dataset_id)
            request = service_pb2.TrainAgentRequest(
                agent_id=request.agent_id,
                training_data=stored,
                training_type=request.training_type,
                config=request.config,
                request_id=request.request_id,
                dataset_id=request.dataset_id,
            )
            with child_span(self._tracer, "validate", **{"rpc.method": "TrainAgent"}):
                validation.check_train_agent(request, self._config, from_dataset=True)
        training_type = convert.TRAINING_TYPE_NAMES[request.training_type]
        if training_type not in SERVED_TRAINING_TYPES:
            raise Unimplemented(
                f"training_type {training_type} is not served by this server release",
                hint="Use a TRAINING_TYPE_ value the contract lists.",
            )
        agent = await self._guard.agent(request.agent_id)
        if training_type == "few_shot":
            extends = False
            if agent.active_version_id:
                active = await self._agents.get_version(agent.agent_id, agent.active_version_id)
                extends = active.encoder.get("name") == "all-MiniLM-L6-v2"
                if extends:
                    validation.check_extended_outputs(
                        request, active.outputs, self._config.max_outputs_per_agent
                    )
            validation.check_few_shot_outputs(request, extends)
        settings = convert.settings_from_proto(
            request.config, training_type, self._config.max_job_seconds
        )
        if training_type == "transfer" and settings.base_agent_id:
            settings = await self._resolve_base(settings)
        job = await self._jobs.submit(
            agent_id=agent.agent_id,
            training_type=training_type,
            examples=convert.examples_from_proto(request.training_data),
            settings=settings,
            parent_version_id=agent.active_version_id,
            request_id=request.request_id,
            request_bytes=request.SerializeToString(deterministic=True),
        )
        # The stream only watches: a client that goes away leaves the job running.
        async for event in self._jobs.watch(job.training_id, 1):
            yield service_pb2.TrainAgentResponse(event=convert.event_to_proto(event))

    async def _resolve_base(self, settings: TrainSettings) -> TrainSettings:
        """Check the transfer base and pin its version, so a retry or resume uses the same one."""
        try:
            base = await self._guard.agent(settings.base_agent_id)
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
        if version.encoder.get("name") != "all-MiniLM-L6-v2":
            raise FailedPrecondition(
                f"base version {version_id!r} uses the {version.encoder.get('name')} encoder",
                code="BASE_ENCODER_NOT_TRANSFERABLE",
                hint="Transfer reuses a pretrained-encoder version (trained with few_shot or"
                " transfer); leave config.base_agent_id empty to start from the pretrained"
                " encoder.",
            )
        return dataclasses.replace(settings, base_version_id=version_id)

    async def GetTrainingJob(  # noqa: D102
        self, request: service_pb2.GetTrainingJobRequest, context: Context
    ) -> service_pb2.GetTrainingJobResponse:
        validation.check_training_id(request.training_id)
        job = await self._guard.job(request.training_id)
        return service_pb2.GetTrainingJobResponse(job=convert.job_to_proto(job))

    async def ListTrainingJobs(  # noqa: D102
        self, request: service_pb2.ListTrainingJobsRequest, context: Context
    ) -> service_pb2.ListTrainingJobsResponse:
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id, required=False)
        checker.enum("status", request.status, training_pb2.TrainingStatus)
        position = checker.page(request.page_size, request.page_token, self._config)
        before = position.get("before", 0)
        if not isinstance(before, int) or before < 0:
            checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        statuses = ()
        if request.status:
            name = training_pb2.TrainingStatus.Name(request.status)
            statuses = (name.removeprefix("TRAINING_STATUS_"),)
        page = await self._jobs.list(
            request.agent_id,
            statuses,
            validation.page_size_or_default(request.page_size),
            before,
            current_tenant(),
        )
        return service_pb2.ListTrainingJobsResponse(
            jobs=[convert.job_to_proto(job) for job in page.items],
            next_page_token=_token(
                {"before": int(page.next_page_token or 0)}, page.next_page_token
            ),
        )

    async def CancelTrainingJob(  # noqa: D102
        self, request: service_pb2.CancelTrainingJobRequest, context: Context
    ) -> service_pb2.CancelTrainingJobResponse:
        validation.check_training_id(request.training_id)
        await self._guard.job(request.training_id)
        job = await self._jobs.cancel(request.training_id)
        return service_pb2.CancelTrainingJobResponse(job=convert.job_to_proto(job))

    async def WatchTrainingJob(  # noqa: D102
        self, request: service_pb2.WatchTrainingJobRequest, context: Context
    ) -> AsyncIterator[service_pb2.WatchTrainingJobResponse]:
        checker = Checker()
        checker.resource_id("training_id", request.training_id)
        if request.from_sequence < 0:
            checker.add("from_sequence", "must be 0 or more")
        checker.raise_if_any()
        await self._guard.job(request.training_id)
        async for event in self._jobs.watch(request.training_id, request.from_sequence):
            yield service_pb2.WatchTrainingJobResponse(event=convert.event_to_proto(event))

    # Using agents -------------------------------------------------------------------------

    async def InvokeAgent(  # noqa: D102
        self, request: service_pb2.InvokeAgentRequest, context: Context
    ) -> service_pb2.InvokeAgentResponse:
        with child_span(self._tracer, "validate", **{"rpc.method": "InvokeAgent"}):
            validation.check_invoke_agent(request, self._config)
        # The inference service checks the agent's tenant in the same thread hop as the lookup.
        inputs = [request.input] if request.input else list(request.inputs)
        version, answers = await self._inference.invoke(
            request.agent_id, inputs, request.version_id, list(request.context)
        )
        return service_pb2.InvokeAgentResponse(
            version_id=version.version_id,
            predictions=[convert.answer_to_proto(answer) for answer in answers],
        )

    async def RecordFeedback(  # noqa: D102
        self, request: service_pb2.RecordFeedbackRequest, context: Context
    ) -> service_pb2.RecordFeedbackResponse:
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        checker.text("invocation_id", request.invocation_id, 64, required=True)
        validation.check_feedback(checker, "feedback", request.feedback, required=True)
        checker.text("corrected_output", request.corrected_output, self._config.max_text_length)
        checker.text("comment", request.comment, validation.MAX_DESCRIPTION)
        checker.raise_if_any()
        await self._guard.agent(request.agent_id)
        await self._guard.invocation(request.invocation_id)
        feedback, duplicate = await self._feedback.record(
            request.agent_id,
            request.invocation_id,
            request.feedback,
            request.corrected_output,
            request.comment,
        )
        return service_pb2.RecordFeedbackResponse(
            feedback_id=feedback.feedback_id, duplicate=duplicate
        )

    # Seed operations still to come ----------------------------------------------------------

    async def AnalyzeAndOptimize(  # noqa: D102
        self, request: service_pb2.AnalyzeAndOptimizeRequest, context: Context
    ) -> service_pb2.AnalyzeAndOptimizeResponse:
        goals = analysis_requests.check_analyze(request, self._config)
        await self._guard.agent(request.agent_id)
        if request.apply_suggestion_id:
            check_scope(current_principal(), "agents:write", "applying a suggestion")
            return await self._apply_suggestion(request)
        return await self._analyze(request, goals, self._config.max_direct_analysis_examples)

    async def AnalyzeAndOptimizeStream(  # noqa: D102
        self, request: service_pb2.AnalyzeAndOptimizeStreamRequest, context: Context
    ) -> AsyncIterator[service_pb2.AnalyzeAndOptimizeStreamResponse]:
        inner = request.request
        goals = analysis_requests.check_analyze(inner, self._config)
        await self._guard.agent(inner.agent_id)
        if inner.apply_suggestion_id:
            raise InvalidArgument(
                "AnalyzeAndOptimizeStream does not apply suggestions",
                hint="Apply a suggestion with AnalyzeAndOptimize (it answers at once).",
            )
        # What can be found wrong at once is answered at once, before a job is stored (the
        # agent was looked up by the guard above).
        if inner.version_id:
            await self._agents.get_version(inner.agent_id, inner.version_id)
        if inner.dataset_id:
            await self._guard.dataset(inner.dataset_id)

        async def analysis(progress: Any) -> bytes:
            response = await self._analyze(
                inner, goals, self._config.max_dataset_examples, progress
            )
            return response.SerializeToString()

        key = idempotency_key(
            "AnalyzeAndOptimizeStream",
            inner.request_id,
            request.SerializeToString(deterministic=True),
        )
        job = await self._analysis_jobs.start(inner.agent_id, analysis, key)
        yield service_pb2.AnalyzeAndOptimizeStreamResponse(
            accepted=service_pb2.AnalysisAccepted(analysis_id=job.analysis_id)
        )
        # The stream only watches: a client that goes away leaves the analysis running.
        async for message in self._analysis_messages(job.analysis_id):
            yield service_pb2.AnalyzeAndOptimizeStreamResponse(**message)

    async def GetAnalysisJob(  # noqa: D102
        self, request: service_pb2.GetAnalysisJobRequest, context: Context
    ) -> service_pb2.GetAnalysisJobResponse:
        validation.check_analysis_id(request.analysis_id)
        job = await self._guard.analysis(request.analysis_id)
        return service_pb2.GetAnalysisJobResponse(job=analysis_requests.analysis_job_to_proto(job))

    async def WatchAnalysisJob(  # noqa: D102
        self, request: service_pb2.WatchAnalysisJobRequest, context: Context
    ) -> AsyncIterator[service_pb2.WatchAnalysisJobResponse]:
        validation.check_analysis_id(request.analysis_id)
        await self._guard.analysis(request.analysis_id)
        async for message in self._analysis_messages(request.analysis_id):
            yield service_pb2.WatchAnalysisJobResponse(**message)

    async def _analysis_messages(self, analysis_id: str) -> AsyncIterator[dict[str, Any]]:
        """Progress and result messages of an analysis job; its error when it failed."""
        async for job in self._analysis_jobs.watch(analysis_id):
            if job.status == AnalysisStatus.SUCCEEDED:
                result = service_pb2.AnalyzeAndOptimizeResponse.FromString(job.result)
                yield {"result": result}
            elif job.status == AnalysisStatus.FAILED:
                raise analysis_jobs.error_of(job)
            elif job.progress:
                yield {"progress": service_pb2.AnalysisProgress(**job.progress)}

    async def _analyze(
        self,
        request: service_pb2.AnalyzeAndOptimizeRequest,
        goals: list[str],
        max_examples: int,
        progress: Any = None,
    ) -> service_pb2.AnalyzeAndOptimizeResponse:
        evaluation = list(request.evaluation_data)
        if request.dataset_id:
            evaluation = await self.dataset_training_data(request.dataset_id)
        report = await self._analysis.analyze(
            request.agent_id,
            request.version_id,
            convert.examples_from_proto(evaluation) if evaluation else None,
            goals,
            max_examples=max_examples,
            progress=progress,
        )
        return analysis_requests.report_to_proto(report)

    async def _apply_suggestion(
        self, request: service_pb2.AnalyzeAndOptimizeRequest
    ) -> service_pb2.AnalyzeAndOptimizeResponse:
        key = idempotency_key(
            "ApplySuggestion", request.request_id, request.SerializeToString(deterministic=True)
        )
        version = await self._analysis.apply(
            request.agent_id, request.apply_suggestion_id, request.activate, key
        )
        agent = await self._agents.get(request.agent_id)
        return service_pb2.AnalyzeAndOptimizeResponse(
            version_id=version.parent_version_id,
            applied_version=convert.version_to_proto(version, agent.active_version_id),
        )

    async def AdaptAgentBehavior(  # noqa: D102
        self, request: service_pb2.AdaptAgentBehaviorRequest, context: Context
    ) -> service_pb2.AdaptAgentBehaviorResponse:
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        checker.enum(
            "adaptation_strategy", request.adaptation_strategy, adaptation_pb2.AdaptationStrategy
        )
        if not request.adaptation_strategy:
            valid = ", ".join(
                name
                for name in adaptation_pb2.AdaptationStrategy.DESCRIPTOR.values_by_name
                if not name.endswith("UNSPECIFIED")
            )
            checker.add("adaptation_strategy", f"is required; one of {valid}")
        # The adaptation checks observed values against what each metric means; targets are rates.
        checker.metric_map("performance_metrics", request.performance_metrics)
        checker.metric_map("targets", request.targets, bounds=(0, 1))
        checker.request_id(request.request_id)
        checker.raise_if_any()
        # The adaptation service checks the metrics, then fetches the agent (tenant-checked).
        strategy = adaptation_pb2.AdaptationStrategy.Name(request.adaptation_strategy)
        result = await self._adaptation.adapt(
            request.agent_id,
            dict(request.performance_metrics),
            strategy.removeprefix("ADAPTATION_STRATEGY_").lower(),
            dict(request.targets),
            request.dry_run,
        )
        response = service_pb2.AdaptAgentBehaviorResponse(
            previous_version_id=result.previous_version_id,
            changes=[
                adaptation_pb2.BehaviorChange(
                    setting=c.setting,
                    old_value=c.old_value,
                    new_value=c.new_value,
                    reason=c.reason,
                    evidence=c.evidence,
                )
                for c in result.changes
            ],
            ignored_metrics=result.ignored_metrics,
            summary=result.summary,
        )
        if result.version is not None:
            agent = await self._agents.get(request.agent_id)
            response.version.CopyFrom(
                convert.version_to_proto(result.version, agent.active_version_id)
            )
        return response


def _token(position: dict, present: str) -> str:
    return validation.encode_page_token(position) if present else ""
