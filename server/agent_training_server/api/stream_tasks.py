"""Server streams run as coroutines, so their handlers always end in the call's own task.

gRPC's asyncio server drives an async-generator handler with ``async for`` and stops at the
first send that fails (the client cancelled or went away, the server is stopping) without closing
the generator. The generator is then closed later by the event loop's finaliser, in another task
with another ``contextvars`` context. The OpenTelemetry server interceptor's generator holds an
attached context across its ``yield``: detaching it there fails, and ``opentelemetry.context``
logs "Failed to detach context" with a traceback after perfectly ordinary calls.

This interceptor, outermost, turns each server-streaming handler into a coroutine that writes
the generator's messages with ``context.write`` and closes the generator in ``finally``, in the
call's task, whatever ends the stream. A write that fails in gRPC's core (the client cancelled
while it waited for flow control: a stream nobody reads, then closed) ends the call quietly,
instead of logging gRPC's ExecuteBatchError with a traceback; the call's status is core's. It
changes nothing else: errors and aborts raised by the generator reach gRPC as before.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import grpc

from agent_training_server.grpc_handlers import Continuation, aio_handler

log = logging.getLogger(__name__)


class StreamTaskInterceptor(grpc.aio.ServerInterceptor):
    """Runs server-streaming handlers to their end in the call's task (see the module docstring)."""

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Replace a server-streaming behaviour by a coroutine that writes its messages."""
        found = await continuation(handler_call_details)
        if found is None:
            return found
        handler = aio_handler(found)
        if handler.unary_stream is None:
            return found
        return handler._replace(unary_stream=_written(handler.unary_stream))


def _written(
    behavior: Callable[[Any, grpc.aio.ServicerContext], AsyncGenerator[Any, None]],
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]:
    async def write_all(request: Any, context: grpc.aio.ServicerContext) -> None:
        responses = behavior(request, context)
        if inspect.isawaitable(responses):  # already a coroutine that writes its messages
            await responses
            return
        try:
            async for response in responses:
                try:
                    await context.write(response)
                except grpc.aio.InternalError as error:
                    # The send failed in gRPC's core, which has ended the call with its status:
                    # mostly the client cancelled or went away while the write waited for flow
                    # control (an unread stream); also a message over max_message_bytes, which
                    # the client sees as RESOURCE_EXHAUSTED. Nothing more can be sent.
                    log.debug("stream ended by a failed send: %s", error)
                    return
        finally:
            await responses.aclose()  # a no-op when it ran to its end

    return write_all
