"""The calling RPC's cancellation, seen from the worker threads that do its work.

gRPC cancels the handler's task when a client cancels or its deadline passes, but a thread started
with ``asyncio.to_thread`` keeps running. Each call gets an event (set when the call ends for any
reason) in a context variable; ``asyncio.to_thread`` copies the context into the thread, so long
loops there call :func:`raise_if_cancelled` between units of work and stop soon after the caller
went away, instead of burning a core for an answer nobody reads.
"""

from __future__ import annotations

import contextvars
import threading

_call_ended: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "call_ended", default=None
)


class CallCancelled(Exception):
    """The RPC this work was for was cancelled or ran past its deadline."""


def begin_call() -> threading.Event:
    """Start tracking the current call; set the returned event when the call ends."""
    ended = threading.Event()
    _call_ended.set(ended)
    return ended


def call_cancelled() -> bool:
    """Whether the RPC the current code works for has ended (False outside any call)."""
    ended = _call_ended.get()
    return ended is not None and ended.is_set()


def raise_if_cancelled() -> None:
    """Raise CallCancelled when the RPC the current code works for has ended."""
    if call_cancelled():
        raise CallCancelled("the call was cancelled or ran past its deadline")


def outside_call() -> contextvars.Context:
    """A copy of the current context without the call's cancellation.

    For work a call starts that must outlive it (a stored analysis job goes on when its client
    leaves): run it as ``asyncio.create_task(work, context=outside_call())``.
    """
    context = contextvars.copy_context()
    context.run(_call_ended.set, None)
    return context
