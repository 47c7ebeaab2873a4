"""The one place where failures raised by our handlers become gRPC statuses with rich details.

Every error reaching a client carries the rich status that `status.to_status` builds: our
``ErrorDetail`` (the seed's error object), a ``google.rpc.ErrorInfo``, a ``RetryInfo`` when
retrying helps and a ``BadRequest`` with field violations for invalid input. A write that failed
because the data folder is full or read-only is named so (STORAGE_FULL, STORAGE_READ_ONLY:
storage_errors.py). Other unexpected exceptions are logged with their stack and reach the client
only as INTERNAL with the trace_id.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from agent_training_server import errors
from agent_training_server.grpc_handlers import Continuation, aio_handler
from agent_training_server.metrics import Metrics
from agent_training_server.status import to_status
from agent_training_server.storage_health import StorageMonitor
from agent_training_server.telemetry import current_trace_id

log = logging.getLogger(__name__)


def _as_service_error(
    exception: BaseException,
    metrics: Metrics | None = None,
    storage: StorageMonitor | None = None,
) -> errors.ServiceError:
    if isinstance(exception, errors.ServiceError):
        return exception
    if metrics is not None and isinstance(exception, sqlite3.Error):
        metrics.store_errors.inc()
    named = (storage or StorageMonitor()).named(exception)
    if named is not None:
        log.warning("a write failed: %s (%s: %s)", named.code, type(exception).__name__, exception)
        return named
    log.exception("unexpected error while handling a call", exc_info=exception)
    return errors.Internal("the service failed to handle the call")


async def _abort(
    context: grpc.aio.ServicerContext,
    exception: BaseException,
    metrics: Metrics | None,
    storage: StorageMonitor | None = None,
) -> None:
    status = to_status(_as_service_error(exception, metrics, storage), current_trace_id())
    # abort() rather than abort_with_status(): the tracing interceptor's context wrapper records
    # the status on the server span only through abort().
    await context.abort(status.code, status.details, status.trailing_metadata)


def _wrap_unary(
    behavior: Callable[..., Awaitable[Any]],
    metrics: Metrics | None,
    storage: StorageMonitor | None = None,
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exception:
            failure = exception
        await _abort(context, failure, metrics, storage)

    return handle


def _wrap_stream(
    behavior: Callable[..., AsyncIterator[Any]],
    metrics: Metrics | None,
    storage: StorageMonitor | None = None,
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behavior(request, context):
                yield response
            return
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exception:
            failure = exception
        await _abort(context, failure, metrics, storage)

    return handle


class ErrorTranslationInterceptor(grpc.aio.ServerInterceptor):
    """Turns exceptions raised by our service's handlers into rich gRPC statuses.

    It must run inside the tracing interceptor, so that the server span is current and its
    trace id goes into the error.
    """

    def __init__(
        self,
        service_prefix: str,
        metrics: Metrics | None = None,
        storage: StorageMonitor | None = None,
    ) -> None:
        self._prefix = service_prefix
        self._metrics = metrics
        self._storage = storage

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the handler of our service's methods; leave others (health, reflection) alone."""
        found = await continuation(handler_call_details)
        if found is None or not handler_call_details.method.startswith(self._prefix):
            return found
        handler, metrics, storage = aio_handler(found), self._metrics, self._storage
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, metrics, storage))
        if handler.unary_stream is not None:
            return handler._replace(
                unary_stream=_wrap_stream(handler.unary_stream, metrics, storage)
            )
        if handler.stream_unary is not None:
            # A unary wrapper fits: it passes the request iterator through untouched.
            return handler._replace(
                stream_unary=_wrap_unary(handler.stream_unary, metrics, storage)
            )
        return found
