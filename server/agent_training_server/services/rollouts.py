"""Rollouts: a candidate version meets live traffic beside the active one.

It is then promoted or aborted, by a caller or by the rollout's policy. The active version is
untouched until promotion: InvokeAgent routes calls to the arms (services/inference.py,
rollouts/assignment.py) and records which arm answered; the evidence is gathered from those
records and their feedback (rollouts/evidence.py); a policy decides after each recorded
feedback with an always-valid sequential test (rollouts/decisions.py). Every decision is stored
with its evidence, counted in a metric and traced in a span.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable

from opentelemetry import trace

from agent_training_server.auth import current_tenant
from agent_training_server.domain import (
    Agent,
    Rollout,
    RolloutDecision,
    RolloutMode,
    RolloutPolicy,
    RolloutRequest,
    RolloutState,
)
from agent_training_server.errors import FailedPrecondition
from agent_training_server.metrics import Metrics
from agent_training_server.rollouts import decisions
from agent_training_server.rollouts.assignment import ACTIVE, CANDIDATE
from agent_training_server.rollouts.evidence import Evidence, gather
from agent_training_server.services.agents import idempotency_key, new_id
from agent_training_server.store.base import RolloutRunning, Store

PROMOTE = "promote"
ABORT = "abort"


def new_rollout(
    agent_id: str, candidate_version_id: str, active_version_id: str, request: RolloutRequest
) -> Rollout:
    """A running rollout of ``candidate_version_id`` against the active version, as asked."""
    now = time.time()
    return Rollout(
        rollout_id=new_id("rollout"),
        agent_id=agent_id,
        candidate_version_id=candidate_version_id,
        active_version_id=active_version_id,
        mode=request.mode,
        traffic_share=request.traffic_share if request.mode == RolloutMode.CANARY else 0.0,
        policy=request.policy,
        create_time=now,
        update_time=now,
    )


@dataclasses.dataclass(frozen=True)
class RolloutReport:
    """A rollout with its evidence as of now."""

    rollout: Rollout
    evidence: Evidence


class RolloutService:
    """Starts, follows, changes and ends rollouts of the caller's agents."""

    def __init__(
        self,
        store: Store,
        tracer: trace.Tracer,
        metrics: Metrics | None = None,
        flush_answers: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Rollouts in ``store``.

        ``flush_answers`` writes the answers kept behind (services/feedback.py) before the
        evidence is read, so that it counts every answer given before the call.
        """
        self._store = store
        self._flush_answers = flush_answers
        self._tracer = tracer
        self._metrics = metrics
        # One decision at a time per agent in this process: a policy check racing a caller's
        # promotion is settled by the store (the second end_rollout finds it ended).
        self._deciding: dict[str, asyncio.Lock] = {}

    async def start(
        self,
        *,
        agent_id: str,
        candidate_version_id: str,
        mode: str,
        traffic_share: float,
        policy: RolloutPolicy | None,
        request_id: str = "",
        request_bytes: bytes = b"",
    ) -> RolloutReport:
        """Start a rollout of one of the agent's versions.

        Raises:
            NotFound: the agent or the version is missing.
            FailedPrecondition: the agent has no active version, the candidate is the active
                version, or a rollout is running (ROLLOUT_RUNNING).
        """
        agent = await self._agent(agent_id)
        if not agent.active_version_id:
            raise FailedPrecondition(
                f"agent {agent_id!r} has no active version to compare the candidate with",
                code="NO_ACTIVE_VERSION",
                hint="Activate a version first (TrainAgent or ActivateAgentVersion).",
            )
        await asyncio.to_thread(self._store.get_version, agent_id, candidate_version_id)
        if candidate_version_id == agent.active_version_id:
            raise FailedPrecondition(
                f"version {candidate_version_id!r} is already the active version",
                code="ROLLOUT_CANDIDATE_ACTIVE",
                hint="Roll out a version other than the active one.",
            )
        rollout = new_rollout(
            agent_id,
            candidate_version_id,
            agent.active_version_id,
            RolloutRequest(mode=mode, traffic_share=traffic_share, policy=policy),
        )
        key = idempotency_key("StartRollout", request_id, request_bytes)
        try:
            made = await asyncio.to_thread(self._store.create_rollout, rollout, key)
        except RolloutRunning as running:
            raise FailedPrecondition(
                f"agent {agent_id!r} has a running rollout ({running.rollout.rollout_id})",
                code="ROLLOUT_RUNNING",
                hint="An agent has one rollout at a time: end it with PromoteRollout or"
                " AbortRollout first.",
            ) from running
        return await self._report(made)

    async def get(self, agent_id: str, rollout_id: str = "") -> RolloutReport:
        """The agent's rollout (running, else latest, else ``rollout_id``) with its evidence."""
        await self._agent(agent_id)
        rollout = await asyncio.to_thread(self._store.get_rollout, agent_id, rollout_id)
        return await self._report(rollout)

    async def update(
        self,
        agent_id: str,
        *,
        mode: str | None,
        traffic_share: float | None,
        policy: RolloutPolicy | None,
        remove_policy: bool,
    ) -> RolloutReport:
        """Change the running rollout's mode, share or policy (None keeps each)."""
        rollout = await self._running(agent_id)
        mode = mode or rollout.mode
        share = traffic_share if traffic_share is not None else rollout.traffic_share
        if mode == RolloutMode.CANARY and not 0 < share < 1:
            raise FailedPrecondition(
                "a canary rollout needs a traffic share in (0, 1); this one has none",
                code="ROLLOUT_SHARE_MISSING",
                hint="Set traffic_share with the mode, e.g. 0.1 for a tenth of the traffic.",
            )
        changed = dataclasses.replace(
            rollout,
            mode=mode,
            traffic_share=share if mode == RolloutMode.CANARY else 0.0,
            policy=None if remove_policy else (policy or rollout.policy),
            update_time=time.time(),
        )
        stored = await asyncio.to_thread(self._store.update_rollout, changed)
        return await self._report(stored)

    async def promote(self, agent_id: str, reason: str) -> tuple[RolloutReport, Agent]:
        """Make the candidate the active version; return the ended rollout and the agent."""
        report = await self._decide(agent_id, PROMOTE, reason or "promoted by a caller", False)
        return report, await self._agent(agent_id)

    async def abort(self, agent_id: str, reason: str) -> RolloutReport:
        """End the rollout; the active version stays."""
        return await self._decide(agent_id, ABORT, reason or "aborted by a caller", False)

    async def follow_policy(self, agent_id: str) -> None:
        """Let a running rollout's policy decide, if the evidence now says so.

        Called after each recorded feedback of the agent: the test stays valid however often it
        is checked (rollouts/decisions.py).
        """
        rollout = await asyncio.to_thread(self._store.running_rollout, agent_id)
        if rollout is None or rollout.policy is None:
            return
        async with self._deciding.setdefault(agent_id, asyncio.Lock()):
            rollout = await asyncio.to_thread(self._store.running_rollout, agent_id)
            if rollout is None or rollout.policy is None:
                return
            # Counted by the database: this runs after every feedback.
            counts = await asyncio.to_thread(
                self._store.rollout_feedback_counts, rollout.rollout_id
            )
            active, candidate = (counts.get(arm, (0, 0)) for arm in (ACTIVE, CANDIDATE))
            verdict = decisions.decide(
                decisions.ArmCounts(successes=active[1], trials=active[0]),
                decisions.ArmCounts(successes=candidate[1], trials=candidate[0]),
                rollout.policy.confidence,
                rollout.policy.abort_margin,
                rollout.policy.min_feedback,
            )
            if verdict.action is None:
                return
            evidence = await self._evidence(rollout)
            figures = {**evidence.figures(), **verdict.evidence}
            try:
                await self._end(rollout, verdict.action, verdict.reason, True, figures)
            except FailedPrecondition:
                return  # a caller's decision came first

    async def _decide(
        self, agent_id: str, action: str, reason: str, automatic: bool
    ) -> RolloutReport:
        async with self._deciding.setdefault(agent_id, asyncio.Lock()):
            rollout = await self._running(agent_id)
            evidence = await self._evidence(rollout)
            ended = await self._end(rollout, action, reason, automatic, evidence.figures())
            return RolloutReport(ended, evidence)

    async def _end(
        self,
        rollout: Rollout,
        action: str,
        reason: str,
        automatic: bool,
        figures: dict[str, float],
    ) -> Rollout:
        """Store the decision (a promotion activates the candidate in the same transaction)."""
        decision = RolloutDecision(
            action=action, reason=reason, automatic=automatic, evidence=figures, time=time.time()
        )
        with self._tracer.start_as_current_span(
            "rollout.decision",
            attributes={
                "agent_id": rollout.agent_id,
                "rollout_id": rollout.rollout_id,
                "rollout.action": action,
                "rollout.automatic": automatic,
                **{f"rollout.evidence.{name}": value for name, value in figures.items()},
            },
        ):
            ended = await asyncio.to_thread(
                self._store.end_rollout, rollout.agent_id, rollout.rollout_id, decision
            )
        if self._metrics is not None:
            self._metrics.rollout_decisions.labels(action, str(automatic).lower()).inc()
        return ended

    async def _agent(self, agent_id: str) -> Agent:
        return await asyncio.to_thread(self._store.get_agent, agent_id, current_tenant())

    async def _running(self, agent_id: str) -> Rollout:
        await self._agent(agent_id)
        rollout = await asyncio.to_thread(self._store.running_rollout, agent_id)
        if rollout is None or rollout.state != RolloutState.RUNNING:
            raise FailedPrecondition(
                f"agent {agent_id!r} has no running rollout",
                code="NO_RUNNING_ROLLOUT",
                hint="Start one with StartRollout; GetRollout shows the latest.",
            )
        return rollout

    async def _evidence(self, rollout: Rollout) -> Evidence:
        if self._flush_answers is not None:
            await self._flush_answers()
        answers = await asyncio.to_thread(self._store.rollout_invocations, rollout.rollout_id)
        return gather(rollout, answers)

    async def _report(self, rollout: Rollout) -> RolloutReport:
        return RolloutReport(rollout, await self._evidence(rollout))
