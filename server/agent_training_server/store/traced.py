"""A store wrapper that gives each store call made during a request its own span.

Wrapping keeps tracing out of the SQLite code: every public method of the wrapped store runs
inside a ``store.<method>`` span (database semantic conventions: ``db.system``,
``db.operation``) when it is called under a traced request or job, and runs untouched otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

from agent_training_server.telemetry import child_span


class TracedStore:
    """Proxy to a store: same methods, each call a child span of the current request."""

    def __init__(self, store: Any, tracer: trace.Tracer) -> None:
        self._store = store
        self._tracer = tracer
        self._wrapped: dict[str, Callable[..., Any]] = {}

    @property
    def inner(self) -> Any:
        """The wrapped store."""
        return self._store

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name.startswith("_") or not callable(attribute):
            return attribute
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            wrapped = self._wrap(name)
            self._wrapped[name] = wrapped
        return wrapped

    def _wrap(self, name: str) -> Callable[..., Any]:
        method = getattr(self._store, name)

        @functools.wraps(method)
        def traced(*args: Any, **kwargs: Any) -> Any:
            with child_span(
                self._tracer, f"store.{name}", **{"db.system": "sqlite", "db.operation": name}
            ):
                return method(*args, **kwargs)

        return traced
