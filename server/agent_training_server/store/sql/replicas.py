"""The replicas table: server processes sharing the database, each alive while its lease lasts.

A replica renews its lease every second or so; a job, analysis or dataset upload names its
owner, and is an orphan once no live replica has that name. Times are the replicas' clocks, so
replicas on several machines need clocks kept in step (NTP) to well within a lease.
"""

from __future__ import annotations

from agent_training_server.store.sql.database import Database

LIVE_REPLICAS = "SELECT replica_id FROM replicas WHERE expires > ?"
"""Ids of the replicas alive at a time (the one parameter)."""


def orphaned(column: str = "owner") -> str:
    """A condition true when ``column`` names no replica alive at the time (one parameter)."""
    return f"{column} NOT IN ({LIVE_REPLICAS})"


class ReplicaTables:
    """The replicas table."""

    def __init__(self, database: Database) -> None:
        """Read and write replicas in ``database``."""
        self._database = database

    def register_replica(
        self, replica_id: str, address: str, now: float, expires: float, sole: bool
    ) -> None:
        """Record a replica alive until ``expires`` (alone: every other one is forgotten)."""
        with self._database.write() as db:
            if sole:
                db.execute("DELETE FROM replicas")
            db.execute(
                "INSERT INTO replicas VALUES (?, ?, ?, ?)", (replica_id, address, now, expires)
            )

    def renew_replica(self, replica_id: str, now: float, expires: float) -> bool:
        """Extend a live replica's lease; False when it had expired or is gone."""
        with self._database.write(counted=False) as db:
            renewed = db.execute(
                "UPDATE replicas SET expires = ? WHERE replica_id = ? AND expires > ?",
                (expires, replica_id, now),
            ).rowcount
            if not renewed:  # presumed dead: alive again from now on, with what it still owns
                revived = db.execute(
                    "UPDATE replicas SET expires = ? WHERE replica_id = ?", (expires, replica_id)
                ).rowcount
                if not revived:
                    db.execute(
                        "INSERT INTO replicas VALUES (?, '', ?, ?)", (replica_id, now, expires)
                    )
            # Long-dead replicas are forgotten: nothing refers to them once their work is taken.
            db.execute("DELETE FROM replicas WHERE expires < ?", (now - 3600.0,))
            return bool(renewed)

    def remove_replica(self, replica_id: str) -> None:
        """Forget a replica: what it owns is orphaned at once."""
        with self._database.write() as db:
            db.execute("DELETE FROM replicas WHERE replica_id = ?", (replica_id,))
