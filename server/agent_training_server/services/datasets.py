"""Named datasets: stored, immutable collections of examples, written in chunks.

Examples are kept as serialised `SyntheticExample` messages (the contract's shape), so a dataset
reads back exactly as it was generated or uploaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import struct
import time
from collections.abc import Iterable, Sequence

from agent_training_server.auth import current_tenant
from agent_training_server.domain import Dataset, Page
from agent_training_server.errors import InvalidArgument, ResourceExhausted
from agent_training_server.store.base import IdempotencyKey, Store

MAX_NAME = 128
"""Longest dataset name."""


def check_name(name: str) -> None:
    """Refuse a blank, too long or non-printable dataset name."""
    if not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidArgument(
            f"dataset name {name[:40]!r} is not valid",
            hint=f"Name a dataset with 1 to {MAX_NAME} printable characters.",
        )


class DatasetWriter:
    """Writes one dataset chunk by chunk; `finish` makes it visible, `abort` drops it."""

    def __init__(self, store: Store, dataset: Dataset, max_examples: int) -> None:
        self._store = store
        self.dataset = dataset
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

    async def finish(self, key: IdempotencyKey | None = None) -> Dataset:
        """Make the dataset visible and return it."""
        return await asyncio.to_thread(
            self._store.finish_dataset,
            self.dataset.dataset_id,
            self._count,
            len(self._outputs),
            self._digest.hexdigest(),
            key,
        )

    async def abort(self) -> None:
        """Drop the partly written dataset."""
        await asyncio.to_thread(self._store.discard_dataset, self.dataset.dataset_id)


class DatasetService:
    """Creates, lists, reads and deletes named datasets."""

    def __init__(self, store: Store, max_examples: int) -> None:
        self._store = store
        self.max_examples = max_examples

    async def begin(
        self,
        name: str,
        *,
        description: str = "",
        source: str = "upload",
        recipe: bytes = b"",
        key: IdempotencyKey | None = None,
    ) -> DatasetWriter | Dataset:
        """A writer for a new dataset, or the dataset an earlier same-key call stored."""
        check_name(name)
        dataset = Dataset(
            dataset_id=f"ds_{secrets.token_hex(8)}",
            name=name,
            description=description,
            source=source,
            recipe=recipe,
            create_time=time.time(),
            tenant=current_tenant(),
        )
        replayed = await asyncio.to_thread(self._store.begin_dataset, dataset, key)
        if replayed is not None:
            return replayed
        return DatasetWriter(self._store, dataset, self.max_examples)

    async def get(self, dataset_id: str) -> Dataset:
        """Return the caller's dataset; another tenant's raises the NotFound of a missing one."""
        return await asyncio.to_thread(self._store.get_dataset, dataset_id, current_tenant())

    async def list(self, limit: int, after_name: str, tenant: str) -> Page[Dataset]:
        """A page of a tenant's datasets ordered by name."""
        items = await asyncio.to_thread(self._store.list_datasets, limit + 1, after_name, tenant)
        more = len(items) > limit
        items = items[:limit]
        return Page(items, items[-1].name if more and items else "")

    async def read(self, dataset_id: str, start: int, limit: int) -> list[bytes]:
        """Serialised examples from position `start`."""
        return await asyncio.to_thread(self._store.read_dataset_examples, dataset_id, start, limit)

    async def read_all(self, dataset_id: str) -> tuple[Dataset, list[bytes]]:
        """A whole dataset (for training), in order."""
        dataset = await self.get(dataset_id)
        rows = await self.read(dataset_id, 0, dataset.example_count)
        return dataset, rows

    async def delete(self, dataset_id: str) -> None:
        """Delete a dataset. Raises NotFound."""
        await asyncio.to_thread(self._store.delete_dataset, dataset_id)
