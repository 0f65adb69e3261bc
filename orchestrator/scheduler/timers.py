"""The timer task: sleeps until the nearest deadline in the database, fires what is due, repeats.

It is woken early (``poke``) when a write creates a deadline nearer than the one it sleeps towards,
and never sleeps longer than ``max_sleep`` as a safety net (a deadline created by another process
on the same database, a clock jump). Every pass is two short indexed queries: no busy loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from orchestrator import clock, errors, logs
from orchestrator.engine.model import TimerResult
from orchestrator.store.base import Store
from orchestrator.wakeups import WorkSignals

logger = logging.getLogger("orchestrator.scheduler")

T = TypeVar("T")
StoreCall = Callable[..., Awaitable[Any]]
NOTIFY_OVERLAP_MS = 1_000


class Scheduler:
    """Fires due timers and wakes the pollers of the apps whose runs became ready."""

    def __init__(
        self,
        store: Store,
        call: StoreCall,
        signals: WorkSignals,
        *,
        max_sleep: timedelta = timedelta(seconds=1),
        retry_delay: timedelta = timedelta(seconds=1),
    ) -> None:
        self._store = store
        self._call = call
        self._signals = signals
        self._max_sleep_s = max_sleep.total_seconds()
        self._retry_delay_s = retry_delay.total_seconds()
        self._wake = asyncio.Event()
        # When the task plans to wake next (Unix ms); +inf while a pass runs or before the first.
        self._planned_ms: float = math.inf
        self._since_ms = 0
        self.passes = 0

    def poke(self, deadline_ms: int | None) -> None:
        """A write created ``deadline_ms``: wake the task if it would sleep past it."""
        if deadline_ms is not None and deadline_ms < self._planned_ms:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until ``stop`` is set. Store errors are logged and retried, never fatal."""
        while not stop.is_set():
            try:
                sleep_s = await self._pass()
            except errors.StoreUnavailable as exc:
                logs.log_at(logger, logging.WARNING, "scheduler.store_unavailable", error=exc.message)
                sleep_s = self._retry_delay_s
            except Exception:
                logger.exception("scheduler pass failed")
                sleep_s = self._retry_delay_s
            await self._sleep(sleep_s, stop)

    async def _pass(self) -> float:
        # Any poke from here on must wake the coming sleep: plan "never" and clear the flag before
        # looking at the database.
        self._planned_ms = math.inf
        self._wake.clear()
        now = clock.now_ms()
        result: TimerResult = await self._call(
            self._store.fire_due_timers, now_ms=now, since_ms=self._since_ms
        )
        # The next pass looks back a little before this one: a run made ready by a transaction that
        # picked its time before ``now`` but committed after this pass's query is still announced.
        # An announcement twice only costs the app's pollers one extra claim attempt.
        self._since_ms = now - NOTIFY_OVERLAP_MS
        self.passes += 1
        if result.wakeups.ready_apps:
            self._signals.notify(result.wakeups.ready_apps)
        nearest: int | None = await self._call(self._store.next_deadline_ms, now_ms=clock.now_ms())
        sleep_s = self._max_sleep_s
        if nearest is not None:
            # A few ms past the deadline so the next pass sees it as due, not as still future.
            sleep_s = min(sleep_s, max(0.0, (nearest - clock.now_ms() + 5) / 1000))
        self._planned_ms = clock.now_ms() + sleep_s * 1000
        return sleep_s

    async def _sleep(self, seconds: float, stop: asyncio.Event) -> None:
        wake = asyncio.ensure_future(self._wake.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({wake, stopped}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            stopped.cancel()
