"""The orchestrator's async facade: store calls off the event loop, long polls and wake-ups.

The API layer calls this with validated domain requests; this layer calls the synchronous store in
a dedicated thread pool (one thread for SQLite, whose single writer would serialise them anyway,
and which also serialises wait registration against event ingest), then turns what the store
reports into wake-ups: parked polls of an app are woken when its work may exist, and the scheduler
is poked when a nearer deadline appears.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from orchestrator import clock, logs
from orchestrator.config import Settings
from orchestrator.engine.model import (
    ClaimResult,
    Completion,
    CompletionResult,
    FunctionSpec,
    IngestResult,
    NewEvent,
    RunFilter,
    RunView,
    Wakeups,
    WorkItem,
)
from orchestrator.scheduler.timers import Scheduler
from orchestrator.store.base import Store
from orchestrator.wakeups import WorkSignals

logger = logging.getLogger("orchestrator.service")

T = TypeVar("T")


class Orchestrator:
    """Domain operations of the orchestrator, for the API layer."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._lease_ms = clock.duration_ms(seconds=settings.lease_seconds)
        self._executor = ThreadPoolExecutor(
            max_workers=store.max_concurrency, thread_name_prefix="orchestrator-store"
        )
        self._background: set[asyncio.Future[Any]] = set()
        self.signals = WorkSignals()
        self.scheduler = Scheduler(store, self.call, self.signals)

    @property
    def store(self) -> Store:
        """The store behind this facade."""
        return self._store

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Runs a blocking store call in the store's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def _apply(self, wakeups: Wakeups) -> None:
        if wakeups.ready_apps:
            self.signals.notify(wakeups.ready_apps)
        self.scheduler.poke(wakeups.deadline_ms)

    async def send_events(self, events: Sequence[NewEvent]) -> IngestResult:
        """Ingests events; returns their ids and the runs they started."""
        result = await self.call(self._store.ingest_events, events, now_ms=clock.now_ms())
        self._apply(result.wakeups)
        return result

    async def register_functions(self, app_id: str, functions: Sequence[FunctionSpec]) -> None:
        """Creates or updates an app's functions."""
        await self.call(self._store.register_functions, app_id, functions, now_ms=clock.now_ms())

    async def poll_work(
        self,
        *,
        app_id: str,
        function_ids: Sequence[str],
        worker_id: str,
        max_items: int,
        max_wait: timedelta | None = None,
    ) -> tuple[WorkItem, ...]:
        """Leases ready work, waiting up to ``max_wait`` for some to appear."""
        wait_s = (max_wait or timedelta(seconds=self._settings.poll_max_wait_seconds)).total_seconds()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while not self.signals.closed:
            # Subscribe before claiming: a notification between an empty claim and the wait counts.
            with self.signals.subscribe(app_id) as sub:
                result = await self._claim(app_id, function_ids, worker_id, max_items)
                if result.items:
                    self._apply(result.wakeups)
                    return result.items
                remaining = deadline - loop.time()
                if remaining <= 0 or not await sub.wait(remaining):
                    break
        return ()

    async def _claim(
        self, app_id: str, function_ids: Sequence[str], worker_id: str, max_items: int
    ) -> ClaimResult:
        claim = functools.partial(
            self._store.claim_work,
            app_id=app_id,
            function_ids=function_ids,
            worker_id=worker_id,
            max_items=max_items,
            now_ms=clock.now_ms(),
            lease_ms=self._lease_ms,
        )
        future = asyncio.get_running_loop().run_in_executor(self._executor, claim)
        try:
            # Shielded: a poller that goes away (client cancel, deadline, disconnect) cancels us here,
            # but the claim may still commit in its thread. Its runs are leased, so nothing is lost
            # (they come back when the lease expires); we hand them back at once instead.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(self._release_abandoned, worker_id))
            raise

    def _release_abandoned(self, worker_id: str, future: asyncio.Future[ClaimResult]) -> None:
        if future.cancelled() or future.exception() is not None or not future.result().items:
            return
        items = future.result().items
        logs.log(logger, "poll.abandoned", worker_id=worker_id, runs=len(items))
        task = asyncio.ensure_future(self._release_all(items))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release_all(self, items: Sequence[WorkItem]) -> None:
        for item in items:
            try:
                await self.release_work(item.run_id, item.lease_id)
            except Exception as exc:  # the lease will expire instead: log, do not fail the caller
                logs.log_at(logger, logging.WARNING, "lease.release_failed", run_id=item.run_id, error=exc)

    async def complete_step(self, completion: Completion) -> CompletionResult:
        """Records an outcome and says whether the worker goes on."""
        result = await self.call(
            self._store.complete_step, completion, now_ms=clock.now_ms(), lease_ms=self._lease_ms
        )
        self._apply(result.wakeups)
        return result

    async def extend_lease(self, run_id: str, lease_id: str) -> int:
        """Extends a lease; returns its new expiry (Unix ms)."""
        return await self.call(
            self._store.extend_lease, run_id, lease_id, now_ms=clock.now_ms(), lease_ms=self._lease_ms
        )

    async def release_work(self, run_id: str, lease_id: str) -> None:
        """Hands a leased run back so that another worker takes it at once."""
        wakeups = await self.call(self._store.release_work, run_id, lease_id, now_ms=clock.now_ms())
        self._apply(wakeups)

    async def get_run(self, run_id: str) -> RunView:
        """One run with its steps."""
        return await self.call(self._store.get_run, run_id)

    async def list_runs(self, run_filter: RunFilter) -> list[RunView]:
        """Runs, newest first."""
        return await self.call(self._store.list_runs, run_filter)

    async def cancel_run(self, run_id: str) -> RunView:
        """Cancels a run that has not ended."""
        return await self.call(self._store.cancel_run, run_id, now_ms=clock.now_ms())

    def begin_shutdown(self) -> None:
        """Parked polls end empty now and new polls do not park."""
        self.signals.close()

    async def close(self) -> None:
        """Waits for background work and for store calls in flight, then closes the store."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        self._store.close()
