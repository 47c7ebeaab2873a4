"""Guards every call of our service before its handler runs, and tidies up after it.

- A request that does not parse (random bytes, a string field that is not valid UTF-8) becomes
  INVALID_ARGUMENT with the error object, instead of gRPC's bare UNKNOWN: the deserializer is made
  tolerant and the handler wrapper raises the domain error, which error translation turns into a
  rich status.
- A request with a field over its size limit (too many items, too many characters: the table in
  `field_limits`) is refused with INVALID_ARGUMENT before the handler runs, so nothing unbounded
  is stored or worked on. Each message of an upload is also checked against the ranges of its
  numbers, since its examples are stored as they come.
- Streaming calls (server streams and uploads) are counted; past `max_concurrent_streams` a new one
  is refused with RESOURCE_EXHAUSTED and RetryInfo, since waiting for others to end helps. With
  authentication on, each tenant also has a share (`max_streams_per_tenant`), so one tenant's
  streams cannot take every slot from the others.
- An upload whose client sends nothing for `stream_idle_timeout_seconds` is ended with
  DEADLINE_EXCEEDED `STREAM_IDLE`, so a stream opened and never written frees its slot.
- Each call gets a cancellation event (see `cancellation`) that is set when it ends, so worker
  threads doing its work stop when the client cancels or the deadline passes.

It runs inside ErrorTranslationInterceptor, so the errors it raises are translated like a
handler's, and inside the authentication interceptor, so the caller's tenant is known.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from agent_training_server.api.validation import check_sizes
from agent_training_server.auth import current_tenant
from agent_training_server.cancellation import begin_call
from agent_training_server.config import ServerConfig
from agent_training_server.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from agent_training_server.grpc_handlers import Continuation, aio_handler

STREAM_RETRY_SECONDS = 2.0
"""RetryInfo delay of a refused stream: long-lived streams free their slots slowly."""


@dataclasses.dataclass(frozen=True)
class UndecodableRequest:
    """Stands in for a request message whose bytes did not parse."""

    message_type: str
    reason: str


def malformed(request: UndecodableRequest) -> InvalidArgument:
    """The error for a request that did not parse."""
    return InvalidArgument(
        f"the request is not a valid {request.message_type} message: {request.reason}",
        code="MALFORMED_REQUEST",
        hint="Send a message serialised by a protobuf library from the contract's .proto files;"
        " string fields must be valid UTF-8.",
    )


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = message_type.full_name if message_type is not None else "request"

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except DecodeError as error:
            return UndecodableRequest(name, str(error).split(":")[-1].strip() or "corrupt")

    return deserialize


def tenant_share(config: ServerConfig) -> int:
    """Streaming calls one tenant may have open.

    `max_streams_per_tenant`, by default (0) a quarter of `max_concurrent_streams`; never more
    than the server's limit.
    """
    share = config.max_streams_per_tenant or max(1, config.max_concurrent_streams // 4)
    return min(share, config.max_concurrent_streams)


class StreamSlots:
    """Counts open streaming calls against the server's limit and each tenant's share."""

    def __init__(self, limit: int, per_tenant: int | None = None) -> None:
        """Slots for `limit` streams; `per_tenant` of them at most for one tenant (None: no share).

        Without authentication every caller is the one tenant "default", which then has them all.
        """
        self.limit = limit
        self.per_tenant = per_tenant
        self.open = 0
        self.by_tenant: collections.Counter[str] = collections.Counter()
        self.closing: set[asyncio.Task] = set()
        """Tasks closing the generators of streams whose call ended (held until done)."""

    def take(self, tenant: str) -> Callable[[], None]:
        """Take a slot for `tenant`; return what frees it (at most once, however often called).

        Raises:
            ResourceExhausted: the tenant holds its share, or every slot is in use.
        """
        held = self.by_tenant[tenant]
        if self.per_tenant is not None and held >= self.per_tenant:
            raise ResourceExhausted(
                f"your tenant has {held} streaming calls open, its share of the server's"
                f" {self.limit}",
                code="TOO_MANY_STREAMS",
                hint="This is your tenant's share (max_streams_per_tenant), which leaves the other"
                " slots to other tenants: close streams you no longer read, retry after the"
                " RetryInfo delay, or ask the operator to raise max_streams_per_tenant.",
                retryable=True,
                retry_after_seconds=STREAM_RETRY_SECONDS,
            )
        if self.open >= self.limit:
            raise ResourceExhausted(
                f"{self.open} streaming calls are open; the server's limit is {self.limit}",
                code="TOO_MANY_STREAMS",
                hint="Retry after the RetryInfo delay, close streams you no longer read, or ask"
                " the operator to raise max_concurrent_streams.",
                retryable=True,
                retry_after_seconds=STREAM_RETRY_SECONDS,
            )
        self.open += 1
        self.by_tenant[tenant] += 1
        return _once(lambda: self._give_back(tenant))

    def _give_back(self, tenant: str) -> None:
        self.open -= 1
        self.by_tenant[tenant] -= 1
        if not self.by_tenant[tenant]:
            del self.by_tenant[tenant]


def _check(request: Any, config: ServerConfig, *, with_ranges: bool = False) -> None:
    """Refuse a request that did not parse, or with a field over its size limit."""
    if isinstance(request, UndecodableRequest):
        raise malformed(request)
    check_sizes(request, config, with_ranges=with_ranges)


def _guard_unary(
    behavior: Callable[..., Awaitable[Any]], config: ServerConfig
) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        ended = begin_call()
        try:
            _check(request, config)
            return await behavior(request, context)
        finally:
            ended.set()

    return handle


def _guard_stream(
    behavior: Callable[..., AsyncIterator[Any]], slots: StreamSlots, config: ServerConfig
) -> Callable[..., AsyncIterator[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        ended = begin_call()
        try:
            _check(request, config)
        except InvalidArgument:
            ended.set()
            raise
        release = slots.take(current_tenant())
        responses = behavior(request, context)

        def call_done(_context: object) -> None:
            _end_stream(ended, release, responses, slots.closing)

        # The stubs declare _DoneCallback a class, not a callback Protocol: no function fits it.
        context.add_done_callback(call_done)  # type: ignore[arg-type]
        try:
            async for response in responses:
                yield response
        finally:
            release()
            ended.set()

    return handle


def _once(action: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run_once() -> None:
        nonlocal done
        if not done:
            done = True
            action()

    return run_once


def _end_stream(
    ended: threading.Event,
    release: Callable[[], None],
    responses: AsyncIterator[Any],
    closing_tasks: set[asyncio.Task],
) -> None:
    """The call ended (finished, cancelled or past its deadline): free what it held now.

    When the client goes away while the server waits to send, gRPC cancels the send and leaves
    the response generators suspended at their `yield`; they would only be closed when garbage
    collected, keeping their stream slot and generator thread until then. Closing the handler's
    generator runs its clean-up at once.
    """
    ended.set()
    release()
    closing = getattr(responses, "aclose", None)
    if closing is not None:
        task = asyncio.ensure_future(_close_quietly(closing))
        closing_tasks.add(task)
        task.add_done_callback(closing_tasks.discard)


async def _close_quietly(closing: Callable[[], Awaitable[None]]) -> None:
    # RuntimeError: it is running, and the call's cancellation unwinds it instead.
    with contextlib.suppress(RuntimeError):
        await closing()


def stream_idle(seconds: float) -> DeadlineExceeded:
    """The error for an upload whose client sent nothing for `seconds`."""
    return DeadlineExceeded(
        f"the upload sent no message for {seconds:g} s (stream_idle_timeout_seconds); the server"
        " ended it",
        code="STREAM_IDLE",
        hint="Open the stream when its data is ready and send its messages without pauses that"
        " long; nothing of this upload was stored, so send it again. The operator can raise"
        " stream_idle_timeout_seconds.",
    )


async def _checked(requests: AsyncIterator[Any], config: ServerConfig) -> AsyncIterator[Any]:
    """The upload's messages, each checked; ended with STREAM_IDLE when the client goes quiet.

    Without the timeout an upload opened and never written would hold its stream slot for as
    long as its client liked. Waiting for a message is cancelled at the timeout, which leaves
    gRPC's reader finished: the call ends with the error, nothing more is read. The wait runs
    in the call's own task (`asyncio.timeout`, not `wait_for`, whose inner task can swallow the
    call's cancellation when the client goes away: the upload would then be stored as if
    complete).
    """
    timeout = config.stream_idle_timeout_seconds
    messages = aiter(requests)
    while True:
        try:
            async with asyncio.timeout(timeout):
                request = await anext(messages)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise stream_idle(timeout) from None
        _check(request, config, with_ranges=True)
        yield request


def _guard_upload(
    behavior: Callable[..., Awaitable[Any]], slots: StreamSlots, config: ServerConfig
) -> Callable[..., Awaitable[Any]]:
    async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        ended = begin_call()
        try:
            release = slots.take(current_tenant())
            try:
                return await behavior(_checked(requests, config), context)
            finally:
                release()
        finally:
            ended.set()

    return handle


class CallGuardInterceptor(grpc.aio.ServerInterceptor):
    """Tolerant parsing, field limits, the stream limit and call cancellation for our methods."""

    def __init__(
        self, service_prefix: str, config: ServerConfig, *, tenants_share: bool = False
    ) -> None:
        """Guard the methods under `service_prefix`.

        Args:
            service_prefix: e.g. "/agent_training.v1.AgentTrainingService/".
            config: the server's configuration: its settings (max_text_length...) bound fields
                of requests, max_concurrent_streams the streaming calls open at once and
                stream_idle_timeout_seconds the pause an upload may make.
            tenants_share: give each tenant at most its share of the streams
                (`tenant_share`); on when authentication is on, since without it every caller
                is the one tenant "default".
        """
        self._prefix = service_prefix
        self._config = config
        share = tenant_share(config) if tenants_share else None
        self.streams = StreamSlots(config.max_concurrent_streams, share)

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap our service's handlers; leave health and reflection alone."""
        found = await continuation(handler_call_details)
        if found is None or not handler_call_details.method.startswith(self._prefix):
            return found
        original = aio_handler(found)
        tolerant = original._replace(request_deserializer=_tolerant(original.request_deserializer))
        handler = aio_handler(tolerant)
        config, streams = self._config, self.streams
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_guard_unary(handler.unary_unary, config))
        if handler.unary_stream is not None:
            stream = _guard_stream(handler.unary_stream, streams, config)
            return handler._replace(unary_stream=stream)
        if handler.stream_unary is not None:
            upload = _guard_upload(handler.stream_unary, streams, config)
            return handler._replace(stream_unary=upload)
        return tolerant
