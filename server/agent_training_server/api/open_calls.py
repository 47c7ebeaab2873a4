"""Calls still running when a shutdown's grace period ends are answered with the error object.

`grpc.aio.Server.stop(grace)` cancels every call still running when the grace period ends, and
the client then gets gRPC's bare UNAVAILABLE, with no error object to tell it that retrying after
the restart is the way on. So shortly before the grace period ends (`answer_margin`), the server
cancels the calls of our service still running itself, and each one, in its own task, raises
SERVER_SHUTTING_DOWN (UNAVAILABLE, retryable), which error translation turns into the rich
status like any other error.

This interceptor runs inside error translation. A server stream whose client has stopped
reading waits to send outside it (in `stream_tasks`); such a stream ends with gRPC's own status,
which its client sees only if it ever reads again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from agent_training_server.errors import Unavailable
from agent_training_server.grpc_handlers import Continuation, aio_handler

ANSWER_MARGIN_SECONDS = 1.0
"""How long before the end of the grace period the calls still running are answered."""

RETRY_AFTER_SECONDS = 5.0
"""RetryInfo delay of the answer: about what a restart takes."""


def shutting_down() -> Unavailable:
    """The answer of a call the server stopped because it is shutting down."""
    return Unavailable(
        "the server is shutting down and stopped this call before it finished",
        code="SERVER_SHUTTING_DOWN",
        hint="Send the call again once the server is back (or to another replica). A create or"
        " upload that carries a request_id is not applied twice; an upload without one may"
        " have to be sent again whole.",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )


def answer_delay(grace: float) -> float:
    """Seconds after the start of a shutdown at which the calls still running are answered."""
    if grace <= 2 * ANSWER_MARGIN_SECONDS:
        return grace / 2
    return grace - ANSWER_MARGIN_SECONDS


class OpenCalls:
    """The tasks of our service's calls that are running now."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ending = False
        """Set once the server cancels the calls left: their cancellation is the shutdown's."""

    def __len__(self) -> int:
        return len(self._tasks)

    def enter(self) -> asyncio.Task[Any] | None:
        """Note the current task as a running call; returns it for `leave`."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        return task

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        """The call of `task` ended."""
        self._tasks.discard(task)

    async def end_after(self, delay: float) -> int:
        """Wait `delay` seconds, then stop every call still running. Returns how many."""
        await asyncio.sleep(delay)
        self.ending = True
        running = list(self._tasks)
        for task in running:
            task.cancel()
        return len(running)


def _answered_unary(
    behavior: Callable[..., Awaitable[Any]], calls: OpenCalls
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        task = calls.enter()
        try:
            return await behavior(request, context)
        except asyncio.CancelledError:
            if calls.ending:
                raise shutting_down() from None
            raise
        finally:
            calls.leave(task)

    return handle


def _answered_stream(
    behavior: Callable[..., AsyncIterator[Any]], calls: OpenCalls
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        task = calls.enter()
        try:
            async for response in behavior(request, context):
                yield response
        except asyncio.CancelledError:
            if calls.ending:
                raise shutting_down() from None
            raise
        finally:
            calls.leave(task)

    return handle


class OpenCallsInterceptor(grpc.aio.ServerInterceptor):
    """Tracks our service's running calls, so that a shutdown can answer them (see above)."""

    def __init__(self, service_prefix: str) -> None:
        self._prefix = service_prefix
        self.calls = OpenCalls()

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap our service's handlers; leave health and reflection alone."""
        found = await continuation(handler_call_details)
        if found is None or not handler_call_details.method.startswith(self._prefix):
            return found
        handler, calls = aio_handler(found), self.calls
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_answered_unary(handler.unary_unary, calls))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_answered_stream(handler.unary_stream, calls))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_answered_unary(handler.stream_unary, calls))
        return found
