"""Handlers of the synthetic data RPCs: GenerateSyntheticTrainingData and GenerateSyntheticExamples.

Both may save what they generate as a named dataset (`save_as`), written chunk by chunk as the
examples are sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from agent_training.v1 import service_pb2
from agent_training_server.api import synthetic_requests as requests
from agent_training_server.api.handlers.datasets import save_chunk
from agent_training_server.api.synthetic_wire import ChunkEncoder
from agent_training_server.auth import current_principal
from agent_training_server.auth.interceptor import check_scope
from agent_training_server.config import ServerConfig
from agent_training_server.domain import Dataset
from agent_training_server.services.datasets import DatasetService, DatasetWriter
from agent_training_server.services.synthetic import SyntheticService
from agent_training_server.synthetic.pipeline import Generation
from agent_training_server.synthetic.plan import GenerationPlan
from agent_training_server.synthetic.sources import Sample

ToMessage = Callable[[list[Sample]], service_pb2.GenerateSyntheticTrainingDataResponse]


class SyntheticHandlers:
    """GenerateSyntheticTrainingData (a stream of chunks) and GenerateSyntheticExamples."""

    def __init__(
        self, config: ServerConfig, synthetic: SyntheticService, datasets: DatasetService
    ) -> None:
        self._config = config
        self._synthetic = synthetic
        self._datasets = datasets

    async def generate_stream(
        self, request: service_pb2.GenerateSyntheticTrainingDataRequest
    ) -> AsyncIterator[service_pb2.GenerateSyntheticTrainingDataResponse]:
        """GenerateSyntheticTrainingData: chunks of examples, then the summary."""
        requests.check_generate(request, self._config, unary=False)
        plan, generation = await self._prepare(request)
        writer, replayed = await self._dataset_writer(request)
        chunk_size = request.chunk_size or requests.DEFAULT_CHUNK_SIZE
        to_message = _chunk_builder(plan, request.count)
        sent = 0
        try:
            async for message in self._synthetic.run(
                generation, chunk_size, to_message, plan.data_type
            ):
                sent = message.generated_count
                if writer is not None:
                    await save_chunk(writer, message.examples)
                yield message
            dataset = await writer.finish() if writer else replayed
            writer = None
            summary = requests.summary_to_proto(generation.summary, dataset)
            yield service_pb2.GenerateSyntheticTrainingDataResponse(
                generated_count=sent, total_count=request.count, summary=summary
            )
        finally:
            if writer is not None:
                await writer.abort()

    async def generate(
        self, request: service_pb2.GenerateSyntheticExamplesRequest
    ) -> service_pb2.GenerateSyntheticExamplesResponse:
        """GenerateSyntheticExamples: every example in one response."""
        requests.check_generate(request, self._config, unary=True)
        plan, generation = await self._prepare(request)
        writer, replayed = await self._dataset_writer(request)
        response = service_pb2.GenerateSyntheticExamplesResponse()
        to_message = _chunk_builder(plan, request.count)
        try:
            async for message in self._synthetic.run(
                generation, request.count, to_message, plan.data_type
            ):
                response.examples.extend(message.examples)
            if writer is not None:
                await save_chunk(writer, response.examples)
            dataset = await writer.finish() if writer else replayed
            writer = None
        finally:
            if writer is not None:
                await writer.abort()
        response.summary.CopyFrom(requests.summary_to_proto(generation.summary, dataset))
        return response

    async def _prepare(
        self, request: requests.GenerateRequest
    ) -> tuple[GenerationPlan, Generation]:
        if request.save_as:
            check_scope(current_principal(), "data:write", "saving generated examples")
        parameters = request.parameters
        plan = requests.plan_from_request(request)
        generation = await self._synthetic.prepare(
            plan, parameters.agent_id, parameters.target_agent_id, parameters.dataset_id
        )
        return plan, generation

    async def _dataset_writer(
        self, request: requests.GenerateRequest
    ) -> tuple[DatasetWriter | None, Dataset | None]:
        """A writer when the request saves its examples (or the dataset a retry replays)."""
        if not request.save_as:
            return None, None
        began = await self._datasets.begin(
            request.save_as,
            source="generated",
            recipe=requests.recipe_bytes(request),
            method="SaveGeneratedDataset",
            request_id=request.request_id,
            request_bytes=request.SerializeToString(deterministic=True),
        )
        if isinstance(began, Dataset):
            return None, began
        return began, None


def _chunk_builder(plan: GenerationPlan, total: int) -> ToMessage:
    """A function turning each chunk into a response that counts the examples sent so far."""
    encoder = ChunkEncoder(requests.difficulty_value(plan), plan.data_type)
    sent = 0

    def to_message(chunk: list[Sample]) -> service_pb2.GenerateSyntheticTrainingDataResponse:
        nonlocal sent
        sent += len(chunk)
        return encoder.response(chunk, sent, total)

    return to_message
