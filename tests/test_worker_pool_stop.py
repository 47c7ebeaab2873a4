"""Stopping the pool of training workers: one still starting is ended at once, a ready one
leaves on its own."""

from __future__ import annotations

import asyncio
import signal

from agent_training_server.jobs.messages import Message, Ready
from agent_training_server.jobs.pool import WorkerPool


def test_a_worker_still_starting_is_killed_and_a_ready_one_exits_by_itself() -> None:
    async def scenario() -> tuple[int | None, int | None]:
        ready = asyncio.Event()

        def on_message(message: Message) -> None:
            if isinstance(message, Ready):
                ready.set()

        starting = WorkerPool(1, 1)
        starting.start(on_message)
        # Stopped at once: its worker is importing torch, holds no task, is not waited for.
        await asyncio.to_thread(starting.stop, 60.0)
        killed = starting._workers[0].process.exitcode

        started = WorkerPool(1, 1)
        started.start(on_message)
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.to_thread(started.stop, 60.0)  # it reads the stop and returns
        return killed, started._workers[0].process.exitcode

    killed, exited = asyncio.run(scenario())
    assert killed == -signal.SIGKILL
    assert exited == 0
