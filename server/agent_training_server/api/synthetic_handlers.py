"""Handlers of the synthetic data and dataset RPCs (mixed into AgentTrainingServicer)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import grpc

from agent_training.v1 import service_pb2, synthetic_pb2, training_pb2
from agent_training_server.api import synthetic_requests as requests
from agent_training_server.api import validation
from agent_training_server.api.synthetic_wire import ChunkEncoder
from agent_training_server.api.tenancy import TenantGuard
from agent_training_server.api.validation import Checker
from agent_training_server.auth import current_principal, current_tenant
from agent_training_server.auth.interceptor import check_scope
from agent_training_server.config import ServerConfig
from agent_training_server.domain import Dataset
from agent_training_server.errors import InvalidArgument
from agent_training_server.services.agents import request_digest
from agent_training_server.services.datasets import DatasetService, DatasetWriter
from agent_training_server.services.synthetic import SyntheticService
from agent_training_server.store.base import IdempotencyKey
from agent_training_server.synthetic.pipeline import Generation
from agent_training_server.synthetic.plan import GenerationPlan
from agent_training_server.synthetic.sources import SourceExample

Context = grpc.aio.ServicerContext
DEFAULT_EXAMPLES_PAGE = 1_000
MAX_EXAMPLES_PAGE = 10_000


def idempotency_key(method: str, request_id: str, request_bytes: bytes) -> IdempotencyKey | None:
    """The store's key for a request_id (None without one)."""
    if not request_id:
        return None
    return IdempotencyKey(method, request_id, request_digest(request_bytes), current_tenant())


class SyntheticHandlers:
    """GenerateSyntheticTrainingData, GenerateSyntheticExamples and the dataset RPCs."""

    _config: ServerConfig
    _datasets: DatasetService
    _guard: TenantGuard
    _synthetic: SyntheticService

    # Generation -----------------------------------------------------------------------------

    async def GenerateSyntheticTrainingData(  # noqa: D102
        self, request: service_pb2.GenerateSyntheticTrainingDataRequest, context: Context
    ) -> AsyncIterator[service_pb2.GenerateSyntheticTrainingDataResponse]:
        requests.check_generate(request, self._config, unary=False)
        plan, generation = await self._prepare(request)
        writer, replayed = await self._dataset_writer(request, "GenerateSyntheticTrainingData")
        chunk_size = request.chunk_size or requests.DEFAULT_CHUNK_SIZE
        to_message = self._chunk_builder(plan, request.count)
        sent = 0
        try:
            async for message in self._synthetic.run(
                generation, chunk_size, to_message, plan.data_type
            ):
                sent = message.generated_count
                if writer is not None:
                    await _save_chunk(writer, message.examples)
                yield message
            dataset = await writer.finish(self._save_key(request)) if writer else replayed
            writer = None
            summary = requests.summary_to_proto(generation.summary, dataset)
            yield service_pb2.GenerateSyntheticTrainingDataResponse(
                generated_count=sent, total_count=request.count, summary=summary
            )
        finally:
            if writer is not None:
                await writer.abort()

    async def GenerateSyntheticExamples(  # noqa: D102
        self, request: service_pb2.GenerateSyntheticExamplesRequest, context: Context
    ) -> service_pb2.GenerateSyntheticExamplesResponse:
        requests.check_generate(request, self._config, unary=True)
        plan, generation = await self._prepare(request)
        writer, replayed = await self._dataset_writer(request, "GenerateSyntheticExamples")
        response = service_pb2.GenerateSyntheticExamplesResponse()
        to_message = self._chunk_builder(plan, request.count)
        try:
            async for message in self._synthetic.run(
                generation, request.count, to_message, plan.data_type
            ):
                response.examples.extend(message.examples)
            if writer is not None:
                await _save_chunk(writer, response.examples)
            dataset = await writer.finish(self._save_key(request)) if writer else replayed
            writer = None
        finally:
            if writer is not None:
                await writer.abort()
        response.summary.CopyFrom(requests.summary_to_proto(generation.summary, dataset))
        return response

    async def _prepare(
        self, request: requests.GenerateRequest
    ) -> tuple[GenerationPlan, Generation]:
        parameters = request.parameters
        if request.save_as:
            check_scope(current_principal(), "data:write", "saving generated examples")
        for agent_id in (parameters.agent_id, parameters.target_agent_id):
            if agent_id:
                await self._guard.agent(agent_id)
        from_dataset: list[SourceExample] = []
        if parameters.dataset_id:
            from_dataset = await self._source_examples(parameters.dataset_id)
        if parameters.encoder_synonyms and len(from_dataset) > requests.MAX_ENCODER_SYNONYM_SOURCES:
            raise InvalidArgument(
                f"parameters.encoder_synonyms {requests.ENCODER_SYNONYMS_LIMIT}; dataset"
                f" {parameters.dataset_id!r} has {len(from_dataset)} examples",
                hint="Turn encoder_synonyms off for this dataset, or paraphrase a smaller one.",
            )
        plan = requests.plan_from_request(request, from_dataset)
        generation = await self._synthetic.prepare(
            plan, parameters.agent_id, parameters.target_agent_id
        )
        return plan, generation

    async def _source_examples(self, dataset_id: str) -> list[SourceExample]:
        await self._guard.dataset(dataset_id)
        _dataset, rows = await self._datasets.read_all(dataset_id)
        examples = []
        for row in rows:
            stored = synthetic_pb2.SyntheticExample.FromString(row)
            e = stored.example
            examples.append(
                SourceExample(
                    e.input, e.expected_output, tuple(e.context), e.feedback, stored.topic
                )
            )
        return examples

    @staticmethod
    def _chunk_builder(plan: GenerationPlan, total: int):  # noqa: ANN205
        encoder = ChunkEncoder(requests.difficulty_value(plan), plan.data_type)
        state = {"sent": 0}

        def to_message(chunk: list) -> service_pb2.GenerateSyntheticTrainingDataResponse:
            state["sent"] += len(chunk)
            return encoder.response(chunk, state["sent"], total)

        return to_message

    async def _dataset_writer(
        self, request: requests.GenerateRequest, method: str
    ) -> tuple[DatasetWriter | None, Dataset | None]:
        """A writer when the request saves its examples (or the dataset a retry replays)."""
        if not request.save_as:
            return None, None
        began = await self._datasets.begin(
            request.save_as,
            source="generated",
            recipe=requests.recipe_bytes(request),
            key=self._save_key(request),
        )
        if isinstance(began, Dataset):
            return None, began
        return began, None

    @staticmethod
    def _save_key(request: requests.GenerateRequest) -> IdempotencyKey | None:
        return idempotency_key(
            "SaveGeneratedDataset",
            request.request_id,
            request.SerializeToString(deterministic=True),
        )

    # Datasets -------------------------------------------------------------------------------

    async def UploadDataset(  # noqa: D102
        self, request_iterator: AsyncIterator[service_pb2.UploadDatasetRequest], context: Context
    ) -> service_pb2.UploadDatasetResponse:
        writer: DatasetWriter | None = None
        key = None
        try:
            async for message in request_iterator:
                if writer is None:
                    began, key = await self._begin_upload(message)
                    if isinstance(began, Dataset):
                        return service_pb2.UploadDatasetResponse(
                            dataset=requests.dataset_to_proto(began)
                        )
                    writer = began
                _check_upload_chunk(message, writer.count, self._config)
                # Uploaded examples are stored as SyntheticExamples without metadata.
                await _save_chunk(
                    writer, (synthetic_pb2.SyntheticExample(example=e) for e in message.examples)
                )
            if writer is None:
                raise InvalidArgument(
                    "UploadDataset received no message",
                    hint="Send at least one message with the dataset's name.",
                )
            if writer.count == 0:
                raise InvalidArgument(
                    "the uploaded dataset has no examples",
                    hint="Send the examples in the messages' `examples` field.",
                )
            dataset = await writer.finish(key)
            writer = None
            return service_pb2.UploadDatasetResponse(dataset=requests.dataset_to_proto(dataset))
        finally:
            if writer is not None:
                await writer.abort()

    async def _begin_upload(
        self, first: service_pb2.UploadDatasetRequest
    ) -> tuple[DatasetWriter | Dataset, IdempotencyKey | None]:
        checker = Checker()
        checker.text("name", first.name, 128, required=True)
        checker.text("description", first.description, validation.MAX_DESCRIPTION)
        checker.request_id(first.request_id)
        checker.raise_if_any()
        # The key covers the dataset's identity (name, description), not its chunks.
        identity = service_pb2.UploadDatasetRequest(name=first.name, description=first.description)
        key = idempotency_key("UploadDataset", first.request_id, identity.SerializeToString())
        began = await self._datasets.begin(first.name, description=first.description, key=key)
        return began, key

    async def GetDataset(  # noqa: D102
        self, request: service_pb2.GetDatasetRequest, context: Context
    ) -> service_pb2.GetDatasetResponse:
        _check_dataset_id(request.dataset_id)
        dataset = await self._guard.dataset(request.dataset_id)
        return service_pb2.GetDatasetResponse(dataset=requests.dataset_to_proto(dataset))

    async def ListDatasets(  # noqa: D102
        self, request: service_pb2.ListDatasetsRequest, context: Context
    ) -> service_pb2.ListDatasetsResponse:
        checker = Checker()
        position = checker.page(request.page_size, request.page_token, self._config)
        after = position.get("after", "")
        if not isinstance(after, str):
            checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        page = await self._datasets.list(
            validation.page_size_or_default(request.page_size), str(after), current_tenant()
        )
        token = page.next_page_token
        return service_pb2.ListDatasetsResponse(
            datasets=[requests.dataset_to_proto(d) for d in page.items],
            next_page_token=validation.encode_page_token({"after": token}) if token else "",
        )

    async def ListDatasetExamples(  # noqa: D102
        self, request: service_pb2.ListDatasetExamplesRequest, context: Context
    ) -> service_pb2.ListDatasetExamplesResponse:
        checker = Checker()
        checker.resource_id("dataset_id", request.dataset_id)
        if not 0 <= request.page_size <= MAX_EXAMPLES_PAGE:
            checker.add("page_size", f"must be 0 to {MAX_EXAMPLES_PAGE}")
        start = 0
        if request.page_token:
            try:
                start = validation.decode_page_token(request.page_token).get("start", -1)
            except ValueError:  # not base64 or not JSON: not one of our tokens
                start = -1
            if not isinstance(start, int) or start < 0:
                checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        size = request.page_size or DEFAULT_EXAMPLES_PAGE
        await self._guard.dataset(request.dataset_id)
        rows = await self._datasets.read(request.dataset_id, start, size + 1)
        response = service_pb2.ListDatasetExamplesResponse(
            examples=[synthetic_pb2.SyntheticExample.FromString(row) for row in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = validation.encode_page_token({"start": start + size})
        return response

    async def DeleteDataset(  # noqa: D102
        self, request: service_pb2.DeleteDatasetRequest, context: Context
    ) -> service_pb2.DeleteDatasetResponse:
        _check_dataset_id(request.dataset_id)
        await self._guard.dataset(request.dataset_id)
        await self._datasets.delete(request.dataset_id)
        return service_pb2.DeleteDatasetResponse()

    async def dataset_training_data(self, dataset_id: str) -> list[training_pb2.TrainingExample]:
        """The examples of a stored dataset, for TrainAgent's dataset_id."""
        _check_dataset_id(dataset_id)
        await self._guard.dataset(dataset_id)
        _dataset, rows = await self._datasets.read_all(dataset_id)
        return [synthetic_pb2.SyntheticExample.FromString(row).example for row in rows]


async def _save_chunk(
    writer: DatasetWriter, examples: Iterable[synthetic_pb2.SyntheticExample]
) -> None:
    items = list(examples)
    rows = [item.SerializeToString() for item in items]
    await writer.add(rows, (item.example.expected_output for item in items))


def _check_upload_chunk(
    message: service_pb2.UploadDatasetRequest, offset: int, server: ServerConfig
) -> None:
    checker = Checker()
    for index, example in enumerate(message.examples):
        field = f"examples[{offset + index}]"
        checker.text(f"{field}.input", example.input, server.max_text_length, required=True)
        checker.text(
            f"{field}.expected_output",
            example.expected_output,
            server.max_text_length,
            required=True,
        )
        checker.texts(
            f"{field}.context", example.context, server.max_context_turns, server.max_text_length
        )
        validation.check_feedback(checker, f"{field}.feedback", example.feedback, required=False)
        if len(checker.violations) >= 20:
            break
    checker.raise_if_any()


def _check_dataset_id(dataset_id: str) -> None:
    checker = Checker()
    checker.resource_id("dataset_id", dataset_id)
    checker.raise_if_any()
