"""Store reads kept in memory until the store's next write.

InvokeAgent looks up the agent and the version it serves on every call; those rows change only
when a write commits (a new version, a rollback, a deletion). The store counts its committed write
transactions, and an entry here is used only while that count is the one it was read under, so a
cached read is never older than the last acknowledged write. Any counted write clears the cache:
coarse, but obviously right, and such writes are rare next to reads on this path. The answers
themselves, stored behind every few milliseconds under load, and feedback are not counted: they
change no agent or version.

Replicas sharing a database do not see each other's commits in that count: there an entry is
also bounded in age (``max_age``), so a version another replica activates is served within it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 1024
"""Most reads kept between two writes; past it reads go to the store uncached."""


class ReadCache(Generic[T]):
    """Memoises ``read(*key)`` while ``commits()`` is unchanged. Thread-safe."""

    def __init__(
        self,
        read: Callable[..., T],
        commits: Callable[[], int],
        max_entries: int = MAX_ENTRIES,
        max_age: float = math.inf,
    ) -> None:
        """Cache ``read``'s results while ``commits()`` is unchanged, each ``max_age`` seconds."""
        self._read = read
        self._commits = commits
        self._max_entries = max_entries
        self._max_age = max_age
        self._lock = threading.Lock()
        self._entries: dict[tuple[Hashable, ...], tuple[T, float]] = {}
        self._generation = -1

    def cached(self, *key: Hashable) -> T | None:
        """The kept result for ``key`` if it is still valid, else None; never reads the store.

        For callers on an event loop: a hit costs a dictionary lookup, a miss goes to `get` on
        a worker thread.
        """
        generation = self._commits()
        with self._lock:
            if generation != self._generation:
                return None
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[1] >= self._max_age:
            return None
        return entry[0]

    def get(self, *key: Hashable) -> T:
        """The read's result for ``key``: from memory if no write committed since it was read.

        Errors (NotFound...) are not cached: they come from the store every time.
        """
        # Taken before reading, so an entry is at least as new as the generation it is kept under.
        generation = self._commits()
        now = time.monotonic()
        with self._lock:
            if generation != self._generation:
                self._entries.clear()
                self._generation = generation
            elif key in self._entries:
                value, read_at = self._entries[key]
                if now - read_at < self._max_age:
                    return value
                del self._entries[key]
        value = self._read(*key)
        with self._lock:
            if generation == self._generation and len(self._entries) < self._max_entries:
                self._entries[key] = (value, now)  # its age counts from before the read
        return value
