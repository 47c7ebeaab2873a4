"""Invocations and feedback: what the agent answered, and how users received it.

InvokeAgent must stay fast, so its answers are written behind: kept in memory and stored in one
transaction every `FLUSH_SECONDS` (and at shutdown). RecordFeedback looks in memory first, so
feedback on an answer given a moment ago is accepted before that answer reaches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Sequence

from agent_training_server.auth import current_tenant
from agent_training_server.domain import Feedback, Invocation
from agent_training_server.errors import InvalidArgument, PermissionDenied
from agent_training_server.metrics import Metrics
from agent_training_server.store.base import Store

FLUSH_SECONDS = 0.05
"""Most time an answer waits in memory before it is stored."""

MAX_PENDING = 10_000
"""Answers kept in memory before a flush is forced."""

MAX_UNSTORED = 200_000
"""Most answers kept in memory while the store is behind or failing (about 100 MB). Past it, new
answers are served but not recorded: counted in agent_training_answers_unrecorded_total and
logged, never silently."""

RETRY_SECONDS = 1.0
"""Wait before storing again after a failed write (the answers stay in memory meanwhile)."""

log = logging.getLogger(__name__)


def reward_of(feedback: str) -> float:
    """+1 for "correct", -1 for "incorrect", else the numeric reward in [-1, 1]."""
    text = feedback.strip().lower()
    if text == "correct":
        return 1.0
    if text == "incorrect":
        return -1.0
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not -1.0 <= value <= 1.0:  # NaN fails this too
        raise InvalidArgument(
            f"feedback {feedback[:40]!r} is not correct, incorrect or a reward in [-1, 1]",
            hint='Send "correct", "incorrect" or a number such as "0.5".',
        )
    return value


class FeedbackService:
    """Records answers (write-behind) and the feedback on them."""

    def __init__(
        self, store: Store, metrics: Metrics | None = None, max_unstored: int = MAX_UNSTORED
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._max_unstored = max_unstored
        self._pending: dict[str, Invocation] = {}
        self._flusher: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._shedding = False
        self._failing = False

    def remember(self, invocations: Sequence[Invocation]) -> None:
        """Queue answers to store (called on the event loop).

        Past ``max_unstored`` answers waiting, the rest are not recorded, counted and logged.
        """
        room = max(0, self._max_unstored - len(self._pending))
        if len(invocations) > room:
            self._shed(len(invocations) - room)
            invocations = invocations[:room]
        elif self._shedding and not self._pending:
            self._shedding = False
            log.warning("answers are recorded again")
        for invocation in invocations:
            self._pending[invocation.invocation_id] = invocation
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush_soon())

    def _shed(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.answers_unrecorded.inc(count)
        if not self._shedding:  # once per episode, not per call
            self._shedding = True
            log.warning(
                "answers are not being recorded: %d wait for the store, which is behind or"
                " failing; answers go on being served (agent_training_answers_unrecorded_total"
                " counts those not recorded)",
                len(self._pending),
            )

    async def _flush_soon(self) -> None:
        if len(self._pending) < MAX_PENDING:
            await asyncio.sleep(FLUSH_SECONDS)
        while True:
            try:
                await self.flush()
            except Exception as error:  # the store is failing: keep the answers, try again
                if not self._failing:  # once per outage, not every retry
                    self._failing = True
                    log.warning("storing answers failed (%s); retrying every second", error)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if self._failing:
                self._failing = False
                log.warning("answers are stored again")
            return

    async def flush(self) -> None:
        """Store every queued answer now."""
        async with self._lock:
            batch = list(self._pending.values())
            if not batch:
                return
            await asyncio.to_thread(self._store.record_invocations, batch)
            for invocation in batch:
                self._pending.pop(invocation.invocation_id, None)

    async def stop(self) -> None:
        """Store what is queued (shutdown)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()

    async def record(
        self,
        agent_id: str,
        invocation_id: str,
        feedback: str,
        corrected_output: str = "",
        comment: str = "",
    ) -> tuple[Feedback, bool, Invocation]:
        """Store feedback on an answer of the caller's `agent_id`.

        Returns (the feedback stored, whether it was a duplicate, the answer it is about).

        Raises:
            NotFound: the agent or the invocation is unknown (or another tenant's).
            PermissionDenied: it is another agent's answer.
        """
        tenant = current_tenant()
        await asyncio.to_thread(self._store.get_agent, agent_id, tenant)
        # Read from the store (flushed first when still queued): the feedback row refers to it.
        invocation = await self.invocation(invocation_id, tenant)
        reward = reward_of(feedback)
        if invocation.agent_id != agent_id:
            raise PermissionDenied(
                f"invocation {invocation_id!r} is an answer of another agent",
                code="INVOCATION_OF_ANOTHER_AGENT",
                hint="Send feedback with the agent_id that gave the answer.",
            )
        record = Feedback(
            feedback_id=f"fb_{secrets.token_hex(8)}",
            invocation_id=invocation_id,
            agent_id=agent_id,
            feedback=feedback.strip().lower(),
            reward=reward,
            corrected_output=corrected_output,
            comment=comment,
            time=time.time(),
        )
        stored, duplicate = await asyncio.to_thread(self._store.record_feedback, record)
        if self._metrics is not None and not duplicate:
            kind = record.feedback if record.feedback in ("correct", "incorrect") else "reward"
            self._metrics.feedback.labels(kind).inc()
        return stored, duplicate, invocation

    async def invocation(self, invocation_id: str, tenant: str | None = None) -> Invocation:
        """An answer given by one of ``tenant``'s agents, stored or still queued. Raises NotFound.

        With a tenant the answer is read from the store (flushed first when still queued), so
        another tenant's answer is a row not found like a missing id.
        """
        if tenant is None:
            return await self._invocation(invocation_id)
        if invocation_id in self._pending:
            await self.flush()
        return await asyncio.to_thread(self._store.get_invocation, invocation_id, tenant)

    async def _invocation(self, invocation_id: str) -> Invocation:
        pending = self._pending.get(invocation_id)
        if pending is not None:
            return pending
        return await asyncio.to_thread(self._store.get_invocation, invocation_id)
