"""Named datasets: stored, immutable collections of examples, written in chunks.

Examples are kept as serialised `SyntheticExample` messages (the contract's shape), so a dataset
reads back exactly as it was generated or uploaded; `example_of` and `source_example_of` read
those rows for training, analysis and generation.

Every read, listing and deletion is of the caller's tenant's datasets (`current_tenant()`):
another tenant's dataset answers exactly as a missing one.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import secrets
import struct
import time
from collections.abc import Iterable, Sequence

from agent_training.v1 import synthetic_pb2, training_pb2
from agent_training_server.auth import current_tenant
from agent_training_server.domain import Dataset, Page
from agent_training_server.engines.base import Example
from agent_training_server.errors import InvalidArgument, ResourceExhausted
from agent_training_server.services.agents import idempotency_key
from agent_training_server.store.base import IdempotencyKey, Store
from agent_training_server.synthetic.sources import SourceExample

log = logging.getLogger(__name__)

MAX_NAME = 128
"""Longest dataset name."""


def check_name(name: str) -> None:
    """Refuse a blank, too long or non-printable dataset name."""
    if not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidArgument(
            f"dataset name {name[:40]!r} is not valid",
            hint=f"Name a dataset with 1 to {MAX_NAME} printable characters.",
        )


def example_of(message: training_pb2.TrainingExample) -> Example:
    """The engine example of a TrainingExample (a request's or a stored dataset's)."""
    return Example(
        message.input,
        message.expected_output,
        message.feedback.strip().lower(),
        tuple(message.context),
        message.propensity if message.HasField("propensity") else None,
    )


def source_example_of(row: bytes) -> SourceExample:
    """A stored row as an example a generation rewrites or answers (its topic kept)."""
    stored = synthetic_pb2.SyntheticExample.FromString(row)
    e = stored.example
    return SourceExample(e.input, e.expected_output, tuple(e.context), e.feedback, stored.topic)


class DatasetWriter:
    """Writes one dataset chunk by chunk; `finish` makes it visible, `abort` drops it."""

    def __init__(
        self,
        store: Store,
        dataset: Dataset,
        max_examples: int,
        key: IdempotencyKey | None = None,
    ) -> None:
        self._store = store
        self.dataset = dataset
        self._key = key
        self._max_examples = max_examples
        self._count = 0
        self._digest = hashlib.sha256()
        self._outputs: set[str] = set()

    @property
    def count(self) -> int:
        """Examples written so far."""
        return self._count

    async def add(self, rows: Sequence[bytes], outputs: Iterable[str]) -> None:
        """Append serialised examples (and note their outputs)."""
        if self._count + len(rows) > self._max_examples:
            raise ResourceExhausted(
                f"dataset {self.dataset.name!r} would exceed {self._max_examples} examples",
                code="DATASET_TOO_LARGE",
                hint="Split the examples into several datasets, or raise"
                " max_dataset_examples in the server configuration.",
            )
        for row in rows:
            # Length-prefixed, so the digest identifies the sequence of examples exactly.
            self._digest.update(struct.pack("<I", len(row)))
            self._digest.update(row)
        self._outputs.update(outputs)
        first = self._count
        self._count += len(rows)
        await asyncio.to_thread(
            self._store.append_dataset_examples, self.dataset.dataset_id, first, list(rows)
        )

    async def finish(self) -> Dataset:
        """Make the dataset visible and return it (a retry with its request_id gets it too)."""
        return await asyncio.to_thread(
            self._store.finish_dataset,
            self.dataset.dataset_id,
            self._count,
            len(self._outputs),
            self._digest.hexdigest(),
            self._key,
        )

    async def abort(self) -> None:
        """Drop the partly written dataset."""
        await asyncio.to_thread(self._store.discard_dataset, self.dataset.dataset_id)


class DatasetService:
    """Creates, lists, reads and deletes named datasets."""

    def __init__(self, store: Store, max_examples: int, owner: str = "") -> None:
        """Datasets in ``store``; uploads are recorded as replica ``owner``'s while written."""
        self._store = store
        self.max_examples = max_examples
        self._owner = owner

    async def discard_orphaned(self, _renewed: bool = True) -> None:
        """Drop datasets half-written by a stopped server (replica)."""
        count = await asyncio.to_thread(self._store.discard_unfinished_datasets, time.time())
        if count:
            log.info("discarded %d datasets a stopped server left half-written", count)

    async def begin(
        self,
        name: str,
        *,
        description: str = "",
        source: str = "upload",
        recipe: bytes = b"",
        method: str = "UploadDataset",
        request_id: str = "",
        request_bytes: bytes = b"",
    ) -> DatasetWriter | Dataset:
        """A writer for a new dataset, or the dataset an earlier call with its request_id stored.

        ``method`` and ``request_bytes`` (what identifies the request) make the request_id's
        key, so the same request_id with another request is refused.
        """
        check_name(name)
        key = idempotency_key(method, request_id, request_bytes)
        dataset = Dataset(
            dataset_id=f"ds_{secrets.token_hex(8)}",
            name=name,
            description=description,
            source=source,
            recipe=recipe,
            create_time=time.time(),
            tenant=current_tenant(),
        )
        replayed = await asyncio.to_thread(self._store.begin_dataset, dataset, key, self._owner)
        if replayed is not None:
            return replayed
        return DatasetWriter(self._store, dataset, self.max_examples, key)

    async def get(self, dataset_id: str) -> Dataset:
        """Return the caller's dataset; another tenant's raises the NotFound of a missing one."""
        return await asyncio.to_thread(self._store.get_dataset, dataset_id, current_tenant())

    async def list(self, limit: int, after_name: str) -> Page[Dataset]:
        """A page of the caller's datasets ordered by name."""
        items = await asyncio.to_thread(
            self._store.list_datasets, limit + 1, after_name, current_tenant()
        )
        more = len(items) > limit
        items = items[:limit]
        return Page(items, items[-1].name if more and items else "")

    async def read(self, dataset_id: str, start: int, limit: int) -> builtins.list[bytes]:
        """Serialised examples of the caller's dataset from position `start`."""
        await self.get(dataset_id)
        return await self._rows(dataset_id, start, limit)

    async def read_all(self, dataset_id: str) -> tuple[Dataset, builtins.list[bytes]]:
        """A whole dataset of the caller's, in order."""
        dataset = await self.get(dataset_id)
        rows = await self._rows(dataset_id, 0, dataset.example_count)
        return dataset, rows

    async def training_examples(self, dataset_id: str) -> builtins.list[Example]:
        """The examples of the caller's dataset, to train or evaluate on."""
        _dataset, rows = await self.read_all(dataset_id)
        return [example_of(synthetic_pb2.SyntheticExample.FromString(row).example) for row in rows]

    async def source_examples(self, dataset_id: str) -> builtins.list[SourceExample]:
        """The examples of the caller's dataset, for a generation to rewrite or answer."""
        _dataset, rows = await self.read_all(dataset_id)
        return [source_example_of(row) for row in rows]

    async def delete(self, dataset_id: str) -> None:
        """Delete the caller's dataset. Raises NotFound."""
        await self.get(dataset_id)
        await asyncio.to_thread(self._store.delete_dataset, dataset_id)

    async def _rows(self, dataset_id: str, start: int, limit: int) -> builtins.list[bytes]:
        return await asyncio.to_thread(self._store.read_dataset_examples, dataset_id, start, limit)
