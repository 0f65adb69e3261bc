"""A step that runs longer than the lease keeps it: the worker extends the lease while the step runs, so
the run is not handed out a second time and the step executes once (async and sync step code alike)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

from sdk_python import Client, Context, Event, Run, TriggerEvent
from tests.support import StartOrchestrator, wait_until_async

LEASE_SECONDS = 2
STEP_SECONDS = 2.5 * LEASE_SECONDS  # outlives the lease twice over


async def test_long_steps_keep_their_lease(start_orchestrator: StartOrchestrator) -> None:
    orchestrator = start_orchestrator(lease_seconds=LEASE_SECONDS)
    client = Client(app_id="sdk-lease", target=orchestrator.target)
    executions: Counter[str] = Counter()
    lock = threading.Lock()

    async def slow_async() -> str:
        with lock:
            executions["async"] += 1
        await asyncio.sleep(STEP_SECONDS)
        return "async done"

    def slow_blocking() -> str:
        with lock:
            executions["blocking"] += 1
        time.sleep(STEP_SECONDS)  # in a thread: the event loop keeps beating meanwhile
        return "blocking done"

    # Two runs side by side (one long step each), so the test lasts one step, not two.
    @client.create_function(fn_id="long-async", trigger=TriggerEvent(event="sdk/long.async"))
    async def long_async(ctx: Context) -> Any:
        return await ctx.step.run("async", slow_async)

    @client.create_function(fn_id="long-blocking", trigger=TriggerEvent(event="sdk/long.blocking"))
    async def long_blocking(ctx: Context) -> Any:
        return await ctx.step.run("blocking", slow_blocking)

    worker = client.worker(functions=[long_async, long_blocking])
    serving = asyncio.create_task(worker.serve())
    try:
        await wait_until_async(lambda: worker.registered, timeout=60, message="the worker to register")
        event_ids = await client.send([Event(name="sdk/long.async"), Event(name="sdk/long.blocking")])

        async def ended(event_id: str) -> Run | None:
            runs = await asyncio.to_thread(client.list_runs, event_id=event_id)
            return runs[0] if runs and runs[0].status != "running" else None

        outputs = []
        for event_id in event_ids:
            deadline = time.monotonic() + 60
            run = await ended(event_id)
            while run is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                run = await ended(event_id)
            assert run is not None, "the run did not end"
            assert run.status == "completed", run.error
            assert [s.attempts for s in run.steps] == [1]
            outputs.append(run.output)
        assert outputs == ["async done", "blocking done"]
        assert executions == Counter({"async": 1, "blocking": 1})
    finally:
        await worker.stop()
        await asyncio.wait_for(serving, timeout=30)
        client.close()


async def test_a_cancelled_run_is_abandoned_at_the_next_beat(start_orchestrator: StartOrchestrator) -> None:
    orchestrator = start_orchestrator(lease_seconds=LEASE_SECONDS)
    client = Client(app_id="sdk-lease", target=orchestrator.target)
    started, interrupted = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    @client.create_function(fn_id="endless", trigger=TriggerEvent(event="sdk/endless"))
    async def endless(ctx: Context) -> None:
        await ctx.step.run("forever", forever)

    worker = client.worker(functions=[endless])
    serving = asyncio.create_task(worker.serve())
    try:
        await wait_until_async(lambda: worker.registered, timeout=60, message="the worker to register")
        (event_id,) = await client.send(Event(name="sdk/endless"))
        await asyncio.wait_for(started.wait(), timeout=60)
        (run,) = await asyncio.to_thread(client.list_runs, event_id=event_id)
        cancelled = await asyncio.to_thread(client.cancel_run, run.id)
        assert cancelled.status == "cancelled"
        # The next ExtendLease is refused: the worker cancels the step's task instead of running on.
        await asyncio.wait_for(interrupted.wait(), timeout=10 * LEASE_SECONDS)
        await wait_until_async(lambda: worker.in_flight == 0, timeout=30, message="the run to be dropped")
    finally:
        await worker.stop()
        await asyncio.wait_for(serving, timeout=30)
        client.close()
