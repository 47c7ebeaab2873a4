"""Tables of named datasets and their examples (part of SqlStore).

A dataset is written in chunks while it is generated or uploaded, in state "writing", and becomes
visible only when `finish_dataset` marks it "ready"; a server restart drops unfinished ones. Its
examples are stored one row each (serialised protobuf), so a page is read without loading the set.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent_training_server.domain import Dataset
from agent_training_server.errors import AlreadyExists
from agent_training_server.not_found import dataset_not_found
from agent_training_server.store.base import IdempotencyKey
from agent_training_server.store.sql.database import Connection, Database, Row
from agent_training_server.store.sql.idempotency import remember, replayed_resource
from agent_training_server.store.sql.replicas import orphaned
from agent_training_server.store.sql.tenancy import tenant_clause, tenant_row

_COLUMNS = (
    "dataset_id, name, description, source, recipe, example_count, output_count,"
    " content_sha256, create_time, tenant"
)


class DatasetTables:
    """The named_datasets and dataset_examples tables."""

    def __init__(self, database: Database) -> None:
        """Read and write named datasets in ``database``."""
        self._database = database

    def begin_dataset(
        self, dataset: Dataset, key: IdempotencyKey | None = None, owner: str = ""
    ) -> Dataset | None:
        """Reserve the name and start writing; return the earlier dataset on a same-key replay.

        Raises:
            AlreadyExists: the name is taken (by a ready dataset or one being written).
        """
        with self._database.write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return _dataset_in(db, replayed)
            taken = db.execute(
                "SELECT 1 FROM named_datasets WHERE name = ?", (dataset.name,)
            ).fetchone()
            if taken:
                raise AlreadyExists(
                    f"a dataset named {dataset.name!r} already exists",
                    code="DATASET_ALREADY_EXISTS",
                    hint="Choose another name, or DeleteDataset the existing one first.",
                )
            d = dataset
            db.execute(
                f"INSERT INTO named_datasets ({_COLUMNS}, state, owner)"
                " VALUES (?, ?, ?, ?, ?, 0, 0, '', ?, ?, 'writing', ?)",
                (
                    d.dataset_id,
                    d.name,
                    d.description,
                    d.source,
                    d.recipe,
                    d.create_time,
                    d.tenant,
                    owner,
                ),
            )
            return None

    def append_dataset_examples(
        self, dataset_id: str, first_position: int, examples: Sequence[bytes]
    ) -> None:
        """Store serialised examples at consecutive positions from `first_position`."""
        with self._database.write() as db:
            db.executemany(
                "INSERT INTO dataset_examples VALUES (?, ?, ?)",
                ((dataset_id, first_position + i, row) for i, row in enumerate(examples)),
            )

    def finish_dataset(
        self,
        dataset_id: str,
        example_count: int,
        output_count: int,
        content_sha256: str,
        key: IdempotencyKey | None = None,
    ) -> Dataset:
        """Mark a dataset ready (visible) with its totals."""
        with self._database.write() as db:
            db.execute(
                "UPDATE named_datasets SET state = 'ready', example_count = ?, output_count = ?,"
                " content_sha256 = ? WHERE dataset_id = ?",
                (example_count, output_count, content_sha256, dataset_id),
            )
            remember(db, key, dataset_id)
            return _dataset_in(db, dataset_id)

    def discard_dataset(self, dataset_id: str) -> None:
        """Drop a dataset that could not be finished."""
        with self._database.write() as db:
            db.execute("DELETE FROM named_datasets WHERE dataset_id = ?", (dataset_id,))

    def discard_unfinished_datasets(self, now: float) -> int:
        """Drop datasets half-written by replicas not alive at ``now``; return how many."""
        with self._database.read() as db:  # usually none: the write lock only when needed
            if not db.execute(
                f"SELECT 1 FROM named_datasets WHERE state = 'writing' AND {orphaned()} LIMIT 1",
                (now,),
            ).fetchone():
                return 0
        with self._database.write() as db:
            return db.execute(
                f"DELETE FROM named_datasets WHERE state = 'writing' AND {orphaned()}", (now,)
            ).rowcount

    def get_dataset(self, dataset_id: str, tenant: str | None = None) -> Dataset:
        """Return a ready dataset (of ``tenant``). Raises NotFound."""
        with self._database.read() as db:
            return _dataset_in(db, dataset_id, tenant)

    def list_datasets(
        self, limit: int, after_name: str = "", tenant: str | None = None
    ) -> list[Dataset]:
        """Return up to `limit` ready datasets ordered by name, after `after_name`."""
        condition, params = tenant_clause(tenant)
        with self._database.read() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM named_datasets WHERE state = 'ready' AND name > ?"
                f" AND {condition} ORDER BY name LIMIT ?",
                (after_name, *params, limit),
            ).fetchall()
        return [_dataset_from_row(row) for row in rows]

    def read_dataset_examples(self, dataset_id: str, start: int, limit: int) -> list[bytes]:
        """Return up to `limit` serialised examples from position `start`. Raises NotFound."""
        with self._database.read() as db:
            _dataset_in(db, dataset_id)
            rows = db.execute(
                "SELECT example FROM dataset_examples WHERE dataset_id = ? AND position >= ?"
                " ORDER BY position LIMIT ?",
                (dataset_id, start, limit),
            ).fetchall()
        return [bytes(row["example"]) for row in rows]

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a ready dataset and its examples. Raises NotFound."""
        with self._database.write() as db:
            deleted = db.execute(
                "DELETE FROM named_datasets WHERE dataset_id = ? AND state = 'ready'",
                (dataset_id,),
            ).rowcount
            if not deleted:
                raise dataset_not_found(dataset_id)


def _dataset_in(db: Connection, dataset_id: str, tenant: str | None = None) -> Dataset:
    row = tenant_row(
        db,
        f"SELECT {_COLUMNS} FROM named_datasets WHERE dataset_id = ? AND state = 'ready'",
        dataset_id,
        tenant,
        dataset_not_found,
        tenant_column="tenant",
    )
    return _dataset_from_row(row)


def _dataset_from_row(row: Row) -> Dataset:
    return Dataset(
        dataset_id=row["dataset_id"],
        name=row["name"],
        description=row["description"],
        source=row["source"],
        recipe=bytes(row["recipe"]),
        example_count=row["example_count"],
        output_count=row["output_count"],
        content_sha256=row["content_sha256"],
        create_time=row["create_time"],
        tenant=row["tenant"],
    )
