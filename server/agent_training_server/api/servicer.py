"""The registered servicer: each RPC delegates to the handler of its resource (api/handlers/).

Handlers raise domain errors; ErrorTranslationInterceptor turns them into rich statuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from agent_training.v1 import service_pb2, service_pb2_grpc
from agent_training_server.api.handlers.adaptation import AdaptationHandlers
from agent_training_server.api.handlers.agents import AgentHandlers
from agent_training_server.api.handlers.analysis import AnalysisHandlers
from agent_training_server.api.handlers.datasets import DatasetHandlers
from agent_training_server.api.handlers.export import ExportHandlers
from agent_training_server.api.handlers.inference import InferenceHandlers
from agent_training_server.api.handlers.rollouts import RolloutHandlers
from agent_training_server.api.handlers.synthetic import SyntheticHandlers
from agent_training_server.api.handlers.training import TrainingHandlers

Context = grpc.aio.ServicerContext


class AgentTrainingServicer(service_pb2_grpc.AgentTrainingServiceServicer):
    """Serves agent_training.v1.AgentTrainingService through one handler per resource."""

    def __init__(
        self,
        *,
        agents: AgentHandlers,
        training: TrainingHandlers,
        inference: InferenceHandlers,
        datasets: DatasetHandlers,
        synthetic: SyntheticHandlers,
        analysis: AnalysisHandlers,
        adaptation: AdaptationHandlers,
        rollouts: RolloutHandlers,
        export: ExportHandlers,
    ) -> None:
        self._agents = agents
        self._training = training
        self._inference = inference
        self._datasets = datasets
        self._synthetic = synthetic
        self._analysis = analysis
        self._adaptation = adaptation
        self._rollouts = rollouts
        self._export = export

    # Agents -------------------------------------------------------------------------------

    async def CreateAgent(  # noqa: D102
        self, request: service_pb2.CreateAgentRequest, context: Context
    ) -> service_pb2.CreateAgentResponse:
        return await self._agents.create(request)

    async def GetAgent(  # noqa: D102
        self, request: service_pb2.GetAgentRequest, context: Context
    ) -> service_pb2.GetAgentResponse:
        return await self._agents.get(request)

    async def ListAgents(  # noqa: D102
        self, request: service_pb2.ListAgentsRequest, context: Context
    ) -> service_pb2.ListAgentsResponse:
        return await self._agents.list(request)

    async def DeleteAgent(  # noqa: D102
        self, request: service_pb2.DeleteAgentRequest, context: Context
    ) -> service_pb2.DeleteAgentResponse:
        return await self._agents.delete(request)

    async def ListAgentVersions(  # noqa: D102
        self, request: service_pb2.ListAgentVersionsRequest, context: Context
    ) -> service_pb2.ListAgentVersionsResponse:
        return await self._agents.list_versions(request)

    async def ActivateAgentVersion(  # noqa: D102
        self, request: service_pb2.ActivateAgentVersionRequest, context: Context
    ) -> service_pb2.ActivateAgentVersionResponse:
        return await self._agents.activate_version(request)

    # Training -----------------------------------------------------------------------------

    async def TrainAgent(  # noqa: D102
        self, request: service_pb2.TrainAgentRequest, context: Context
    ) -> AsyncIterator[service_pb2.TrainAgentResponse]:
        async for response in self._training.train(request):
            yield response

    async def GetTrainingJob(  # noqa: D102
        self, request: service_pb2.GetTrainingJobRequest, context: Context
    ) -> service_pb2.GetTrainingJobResponse:
        return await self._training.get_job(request)

    async def ListTrainingJobs(  # noqa: D102
        self, request: service_pb2.ListTrainingJobsRequest, context: Context
    ) -> service_pb2.ListTrainingJobsResponse:
        return await self._training.list_jobs(request)

    async def CancelTrainingJob(  # noqa: D102
        self, request: service_pb2.CancelTrainingJobRequest, context: Context
    ) -> service_pb2.CancelTrainingJobResponse:
        return await self._training.cancel_job(request)

    async def WatchTrainingJob(  # noqa: D102
        self, request: service_pb2.WatchTrainingJobRequest, context: Context
    ) -> AsyncIterator[service_pb2.WatchTrainingJobResponse]:
        async for response in self._training.watch_job(request):
            yield response

    async def PauseTrainingJob(  # noqa: D102
        self, request: service_pb2.PauseTrainingJobRequest, context: Context
    ) -> service_pb2.PauseTrainingJobResponse:
        return await self._training.pause_job(request)

    async def ResumeTrainingJob(  # noqa: D102
        self, request: service_pb2.ResumeTrainingJobRequest, context: Context
    ) -> service_pb2.ResumeTrainingJobResponse:
        return await self._training.resume_job(request)

    async def ListTrainingCheckpoints(  # noqa: D102
        self, request: service_pb2.ListTrainingCheckpointsRequest, context: Context
    ) -> service_pb2.ListTrainingCheckpointsResponse:
        return await self._training.list_checkpoints(request)

    async def CreateVersionFromCheckpoint(  # noqa: D102
        self, request: service_pb2.CreateVersionFromCheckpointRequest, context: Context
    ) -> service_pb2.CreateVersionFromCheckpointResponse:
        return await self._training.version_from_checkpoint(request)

    async def ExportAgentVersion(  # noqa: D102
        self, request: service_pb2.ExportAgentVersionRequest, context: Context
    ) -> AsyncIterator[service_pb2.ExportAgentVersionResponse]:
        async for response in self._export.export(request):
            yield response

    # Rollouts -----------------------------------------------------------------------------

    async def StartRollout(  # noqa: D102
        self, request: service_pb2.StartRolloutRequest, context: Context
    ) -> service_pb2.StartRolloutResponse:
        return await self._rollouts.start(request)

    async def GetRollout(  # noqa: D102
        self, request: service_pb2.GetRolloutRequest, context: Context
    ) -> service_pb2.GetRolloutResponse:
        return await self._rollouts.get(request)

    async def UpdateRollout(  # noqa: D102
        self, request: service_pb2.UpdateRolloutRequest, context: Context
    ) -> service_pb2.UpdateRolloutResponse:
        return await self._rollouts.update(request)

    async def PromoteRollout(  # noqa: D102
        self, request: service_pb2.PromoteRolloutRequest, context: Context
    ) -> service_pb2.PromoteRolloutResponse:
        return await self._rollouts.promote(request)

    async def AbortRollout(  # noqa: D102
        self, request: service_pb2.AbortRolloutRequest, context: Context
    ) -> service_pb2.AbortRolloutResponse:
        return await self._rollouts.abort(request)

    # Using agents -------------------------------------------------------------------------

    async def InvokeAgent(  # noqa: D102
        self, request: service_pb2.InvokeAgentRequest, context: Context
    ) -> service_pb2.InvokeAgentResponse:
        return await self._inference.invoke(request)

    async def RecordFeedback(  # noqa: D102
        self, request: service_pb2.RecordFeedbackRequest, context: Context
    ) -> service_pb2.RecordFeedbackResponse:
        return await self._inference.record_feedback(request)

    # Analysis and adaptation ----------------------------------------------------------------

    async def AnalyzeAndOptimize(  # noqa: D102
        self, request: service_pb2.AnalyzeAndOptimizeRequest, context: Context
    ) -> service_pb2.AnalyzeAndOptimizeResponse:
        return await self._analysis.analyze(request)

    async def AnalyzeAndOptimizeStream(  # noqa: D102
        self, request: service_pb2.AnalyzeAndOptimizeStreamRequest, context: Context
    ) -> AsyncIterator[service_pb2.AnalyzeAndOptimizeStreamResponse]:
        async for response in self._analysis.analyze_stream(request):
            yield response

    async def GetAnalysisJob(  # noqa: D102
        self, request: service_pb2.GetAnalysisJobRequest, context: Context
    ) -> service_pb2.GetAnalysisJobResponse:
        return await self._analysis.get_job(request)

    async def WatchAnalysisJob(  # noqa: D102
        self, request: service_pb2.WatchAnalysisJobRequest, context: Context
    ) -> AsyncIterator[service_pb2.WatchAnalysisJobResponse]:
        async for response in self._analysis.watch_job(request):
            yield response

    async def AdaptAgentBehavior(  # noqa: D102
        self, request: service_pb2.AdaptAgentBehaviorRequest, context: Context
    ) -> service_pb2.AdaptAgentBehaviorResponse:
        return await self._adaptation.adapt(request)

    # Synthetic data and datasets ----------------------------------------------------------

    async def GenerateSyntheticTrainingData(  # noqa: D102
        self, request: service_pb2.GenerateSyntheticTrainingDataRequest, context: Context
    ) -> AsyncIterator[service_pb2.GenerateSyntheticTrainingDataResponse]:
        async for response in self._synthetic.generate_stream(request):
            yield response

    async def GenerateSyntheticExamples(  # noqa: D102
        self, request: service_pb2.GenerateSyntheticExamplesRequest, context: Context
    ) -> service_pb2.GenerateSyntheticExamplesResponse:
        return await self._synthetic.generate(request)

    async def UploadDataset(  # noqa: D102
        self, request_iterator: AsyncIterator[service_pb2.UploadDatasetRequest], context: Context
    ) -> service_pb2.UploadDatasetResponse:
        return await self._datasets.upload(request_iterator)

    async def GetDataset(  # noqa: D102
        self, request: service_pb2.GetDatasetRequest, context: Context
    ) -> service_pb2.GetDatasetResponse:
        return await self._datasets.get(request)

    async def ListDatasets(  # noqa: D102
        self, request: service_pb2.ListDatasetsRequest, context: Context
    ) -> service_pb2.ListDatasetsResponse:
        return await self._datasets.list(request)

    async def ListDatasetExamples(  # noqa: D102
        self, request: service_pb2.ListDatasetExamplesRequest, context: Context
    ) -> service_pb2.ListDatasetExamplesResponse:
        return await self._datasets.list_examples(request)

    async def DeleteDataset(  # noqa: D102
        self, request: service_pb2.DeleteDatasetRequest, context: Context
    ) -> service_pb2.DeleteDatasetResponse:
        return await self._datasets.delete(request)
