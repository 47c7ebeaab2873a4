"""The method handlers gRPC's asyncio server gives its interceptors, typed as they are.

grpc.aio builds method handlers with the same ``grpc.*_rpc_method_handler`` functions as the
threaded server: namedtuples (``grpc._utilities.RpcMethodHandler``), whose behaviours here are
coroutine functions and async generator functions, and which interceptors change with the
namedtuple's ``_replace``. The gRPC stubs type ``grpc.RpcMethodHandler`` for the threaded server
only (plain functions and iterators) and without ``_replace``, so the interceptors read a handler
through `aio_handler`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypedDict, Unpack, cast

import grpc

Context = grpc.aio.ServicerContext[Any, Any]

Continuation = Callable[
    [grpc.HandlerCallDetails], Awaitable["grpc.RpcMethodHandler[Any, Any] | None"]
]
"""The `continuation` a server interceptor calls for the handler of the call."""


class Behaviours(TypedDict, total=False):
    """The fields an interceptor replaces, with what gRPC's asyncio server accepts for each."""

    request_deserializer: Callable[[bytes], Any] | None
    unary_unary: Callable[..., Awaitable[Any]]
    unary_stream: Callable[..., AsyncIterator[Any]] | Callable[..., Awaitable[None]]
    """An async generator function, or a coroutine function that sends with context.write."""
    stream_unary: Callable[..., Awaitable[Any]]
    stream_stream: Callable[..., AsyncIterator[Any]]


class AioMethodHandler(Protocol):
    """A method handler of gRPC's asyncio server.

    The streaming behaviours are async generator functions (the generated servicer's, and the
    wrappers of the interceptors), except grpc health's Watch: a coroutine function that sends
    with context.write, which the interceptors that see every service check for
    (``inspect.isawaitable``). Its fields are a namedtuple's: `_replace` makes a changed copy.
    """

    request_streaming: bool
    response_streaming: bool
    request_deserializer: Callable[[bytes], Any] | None
    response_serializer: Callable[[Any], bytes] | None
    unary_unary: Callable[[Any, Context], Awaitable[Any]] | None
    unary_stream: Callable[[Any, Context], AsyncGenerator[Any, None]] | None
    stream_unary: Callable[[AsyncIterator[Any], Context], Awaitable[Any]] | None
    stream_stream: Callable[[AsyncIterator[Any], Context], AsyncGenerator[Any, None]] | None

    def _replace(self, **fields: Unpack[Behaviours]) -> grpc.RpcMethodHandler[Any, Any]:
        """A copy with `fields` replaced (namedtuple's ``_replace``)."""
        ...


def aio_handler(handler: grpc.RpcMethodHandler[Any, Any]) -> AioMethodHandler:
    """`handler` as the asyncio server has it (see the module docstring)."""
    # The stubs' RpcMethodHandler is the threaded server's: sync behaviours and no _replace.
    return cast(AioMethodHandler, handler)
