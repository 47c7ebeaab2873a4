"""Handlers of the dataset RPCs: upload, get, list, read and delete named datasets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from agent_training.v1 import service_pb2, synthetic_pb2
from agent_training_server.api import synthetic_requests as requests
from agent_training_server.api import validation
from agent_training_server.api.field_limits import MAX_DESCRIPTION
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.domain import Dataset
from agent_training_server.errors import InvalidArgument
from agent_training_server.example_checks import check_example_fields
from agent_training_server.services.datasets import DatasetService, DatasetWriter

DEFAULT_EXAMPLES_PAGE = 1_000
MAX_EXAMPLES_PAGE = 10_000


class DatasetHandlers:
    """UploadDataset, GetDataset, ListDatasets, ListDatasetExamples, DeleteDataset."""

    def __init__(self, config: ServerConfig, datasets: DatasetService) -> None:
        self._config = config
        self._datasets = datasets

    async def upload(
        self, request_iterator: AsyncIterator[service_pb2.UploadDatasetRequest]
    ) -> service_pb2.UploadDatasetResponse:
        """UploadDataset: the first message names the dataset; every message may hold examples."""
        writer: DatasetWriter | None = None
        try:
            async for message in request_iterator:
                if writer is None:
                    began = await self._begin_upload(message)
                    if isinstance(began, Dataset):
                        return service_pb2.UploadDatasetResponse(
                            dataset=requests.dataset_to_proto(began)
                        )
                    writer = began
                _check_upload_chunk(message, writer.count, self._config)
                # Uploaded examples are stored as SyntheticExamples without metadata.
                await save_chunk(
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
            dataset = await writer.finish()
            writer = None
            return service_pb2.UploadDatasetResponse(dataset=requests.dataset_to_proto(dataset))
        finally:
            if writer is not None:
                await writer.abort()

    async def _begin_upload(
        self, first: service_pb2.UploadDatasetRequest
    ) -> DatasetWriter | Dataset:
        checker = Checker()
        checker.text("name", first.name, 128, required=True)
        checker.text("description", first.description, MAX_DESCRIPTION)
        checker.request_id(first.request_id)
        checker.raise_if_any()
        # The request_id covers the dataset's identity (name, description), not its chunks.
        identity = service_pb2.UploadDatasetRequest(name=first.name, description=first.description)
        return await self._datasets.begin(
            first.name,
            description=first.description,
            request_id=first.request_id,
            request_bytes=identity.SerializeToString(),
        )

    async def get(self, request: service_pb2.GetDatasetRequest) -> service_pb2.GetDatasetResponse:
        """GetDataset."""
        check_dataset_id(request.dataset_id)
        dataset = await self._datasets.get(request.dataset_id)
        return service_pb2.GetDatasetResponse(dataset=requests.dataset_to_proto(dataset))

    async def list(
        self, request: service_pb2.ListDatasetsRequest
    ) -> service_pb2.ListDatasetsResponse:
        """ListDatasets."""
        checker = Checker()
        position = checker.page(request.page_size, request.page_token, self._config)
        after = position.get("after", "")
        if not isinstance(after, str):
            checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        page = await self._datasets.list(
            validation.page_size_or_default(request.page_size), str(after)
        )
        token = page.next_page_token
        return service_pb2.ListDatasetsResponse(
            datasets=[requests.dataset_to_proto(d) for d in page.items],
            next_page_token=validation.next_page_token({"after": token}, token),
        )

    async def list_examples(
        self, request: service_pb2.ListDatasetExamplesRequest
    ) -> service_pb2.ListDatasetExamplesResponse:
        """ListDatasetExamples: a page of a dataset's examples, in order."""
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
        # One row more than the page tells whether there is a next one.
        rows = await self._datasets.read(request.dataset_id, start, size + 1)
        response = service_pb2.ListDatasetExamplesResponse(
            examples=[synthetic_pb2.SyntheticExample.FromString(row) for row in rows[:size]]
        )
        if len(rows) > size:
            response.next_page_token = validation.encode_page_token({"start": start + size})
        return response

    async def delete(
        self, request: service_pb2.DeleteDatasetRequest
    ) -> service_pb2.DeleteDatasetResponse:
        """DeleteDataset."""
        check_dataset_id(request.dataset_id)
        await self._datasets.delete(request.dataset_id)
        return service_pb2.DeleteDatasetResponse()


async def save_chunk(
    writer: DatasetWriter, examples: Iterable[synthetic_pb2.SyntheticExample]
) -> None:
    """Append examples to a dataset being written."""
    items = list(examples)
    rows = [item.SerializeToString() for item in items]
    await writer.add(rows, (item.example.expected_output for item in items))


def check_dataset_id(dataset_id: str) -> None:
    """Validate a request whose only required field is dataset_id."""
    checker = Checker()
    checker.resource_id("dataset_id", dataset_id)
    checker.raise_if_any()


def _check_upload_chunk(
    message: service_pb2.UploadDatasetRequest, offset: int, server: ServerConfig
) -> None:
    checker = Checker()
    check_example_fields(checker, "examples", message.examples, server, first_index=offset)
    checker.raise_if_any()
