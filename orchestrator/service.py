"""The orchestrator's async facade: store calls, long polls and wake-ups.

The API layer calls this with validated domain requests; this layer calls the synchronous store,
then turns what the store reports into wake-ups: parked polls of an app are woken when its work may
exist, and the scheduler is poked when a nearer deadline appears. It also hands what a call reports
to the observer (traces, metrics) once the call committed, even if the caller went away meanwhile.

Store calls are group committed (``orchestrator.commits``): the calls of RPCs that arrive
together share a transaction and a commit, and each caller is answered after that commit. Where
they run depends on the store (``Store.inline``). SQLite's are short local transactions: they run
right on the event loop, which also serialises wait registration against event ingest; handing
them to a thread would cost more than the transaction (a thread hop, and the GIL passed back and
forth while the loop serves RPCs). Only reads that may be long (GetRun, ListRuns) go to a thread
with a connection of their own. PostgreSQL's calls wait on the network: its group commits run on the
loop too, each in a greenlet that awaits the server (``Store.cooperative``), and its reads in a pool
of threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from orchestrator import clock, commits, logs, metrics, observability, tracing
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
    TimerResult,
    Wakeups,
    WorkItem,
)
from orchestrator.scheduler.timers import Scheduler
from orchestrator.store.base import Store
from orchestrator.wakeups import ReplicaListener, WorkSignals

logger = logging.getLogger("orchestrator.service")

T = TypeVar("T")


class Orchestrator:
    """Domain operations of the orchestrator, for the API layer."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        tracer: tracing.Tracer | None = None,
        meters: metrics.Metrics | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._lease_ms = clock.duration_ms(seconds=settings.lease_seconds)
        self._inline_reads = store.inline and store.inline_reads
        self._executor = ThreadPoolExecutor(
            max_workers=store.max_concurrency, thread_name_prefix="orchestrator-store"
        )
        self._background: set[asyncio.Future[Any]] = set()
        self.signals = WorkSignals()
        self._commits = commits.GroupCommitter(
            store, self._executor, max_groups=commits.GROUPS_IN_FLIGHT, handoffs=self.signals.take_handoffs
        )
        self._listener: ReplicaListener | None = None
        # Traces and metrics from the OTEL_* environment unless given; off (and free) when unset.
        self.observer = observability.Observer(
            tracer if tracer is not None else tracing.from_env(),
            meters if meters is not None else metrics.from_env(),
            self._read_run,
        )
        self.scheduler = Scheduler(
            store,
            self._scheduler_call,
            self.signals,
            max_sleep=timedelta(seconds=settings.timer_scan_seconds),
        )

    def start_listening(self) -> None:
        """Relays other replicas' ready-work announcements to our pollers (when the store can)."""
        if self._store.listens and self._listener is None:
            self._listener = ReplicaListener(
                self._store.listen,
                self.signals,
                asyncio.get_running_loop(),
                on_rescan=lambda: self.scheduler.poke(0),
            )
            self._listener.start()

    @property
    def store(self) -> Store:
        """The store behind this facade."""
        return self._store

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Runs a store call and returns once it is committed, in the next group commit."""
        return await self._commits.submit(functools.partial(fn, *args, **kwargs))

    def _observed(self, call: Callable[[], T], observe: Callable[[T], None]) -> asyncio.Future[T]:
        """Submits a store call whose committed result goes to ``observe`` whether or not its
        caller still waits for it (see ``orchestrator.commits``)."""
        return self._commits.submit(call, observe)

    async def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Runs a store read that may be long in the store's thread pool, off the loop (inline only
        where the store's one connection is shared)."""
        if self._inline_reads:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _scheduler_call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        # The scheduler's store calls, observed: timers fired (spans of what they ended, lease
        # expiries), and the queue depth.
        result = await self._observed(functools.partial(fn, *args, **kwargs), self._timers_fired)
        if isinstance(result, TimerResult) and self.observer.metrics.enabled:
            # Once per scheduler pass, and only with metrics on: one indexed count.
            depth = await self.read(self._store.queue_depth, now_ms=clock.now_ms())
            self.observer.metrics.queue_depth = depth
        return result

    def _timers_fired(self, result: object) -> None:
        if isinstance(result, TimerResult):
            self.observer.timers_fired(result)

    def _apply(self, wakeups: Wakeups) -> None:
        if wakeups.ready_apps:
            self.signals.notify(wakeups.ready_apps)
        self.scheduler.poke(wakeups.deadline_ms)

    async def send_events(self, events: Sequence[NewEvent]) -> IngestResult:
        """Ingests events; returns their ids and the runs they started."""
        start_ns = observability.now_ns()

        def observe(result: IngestResult) -> None:
            self.observer.events_ingested(events, result, start_ns=start_ns, end_ns=observability.now_ns())

        result = await self._observed(
            functools.partial(self._store.ingest_events, events, now_ms=clock.now_ms()), observe
        )
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
        claim = functools.partial(
            self._store.claim_work,
            app_id=app_id,
            function_ids=function_ids,
            worker_id=worker_id,
            max_items=max_items,
            lease_ms=self._lease_ms,
        )
        while not self.signals.closed:
            # Subscribe before claiming: a notification between an empty claim and the wait counts.
            with self.signals.subscribe(app_id) as sub:
                result = await self._claim(claim, worker_id)
                if not result.items:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    sub.leave_handoff(
                        lambda: claim(now_ms=clock.now_ms()),
                        functools.partial(self._release_claimed, worker_id),
                        self.observer.work_claimed,
                    )
                    try:
                        woken = await sub.wait(remaining)
                    except asyncio.CancelledError:
                        handed = sub.handed()
                        if isinstance(handed, ClaimResult):
                            self._release_claimed(worker_id, handed)
                        raise
                    handed = sub.handed()
                    if isinstance(handed, ClaimResult):
                        result = handed
                    elif not woken:
                        break
                if result.items:
                    self._apply(result.wakeups)
                    return result.items
        return ()

    async def _claim(self, claim: Callable[..., ClaimResult], worker_id: str) -> ClaimResult:
        future = self._observed(lambda: claim(now_ms=clock.now_ms()), self.observer.work_claimed)
        try:
            # Shielded: a poller that goes away (client cancel, deadline, disconnect) cancels us here,
            # but the claim may still commit. Its runs are leased, so nothing is lost (they come
            # back when the lease expires); we hand them back at once instead.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(functools.partial(self._release_abandoned, worker_id))
            raise

    def _release_abandoned(self, worker_id: str, future: asyncio.Future[ClaimResult]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._release_claimed(worker_id, future.result())

    def _release_claimed(self, worker_id: str, result: ClaimResult) -> None:
        """Hands back runs claimed for a poller that went away before it could take them."""
        items = result.items
        if not items:
            return
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

    async def complete_step(
        self, completion: Completion, trace: tracing.StepTrace | None = None
    ) -> CompletionResult:
        """Records an outcome and says whether the worker goes on. ``trace`` is what the worker
        reported about its span for the step, if anything."""
        result = await self._observed(
            functools.partial(
                self._store.complete_step, completion, now_ms=clock.now_ms(), lease_ms=self._lease_ms
            ),
            lambda committed: self.observer.step_completed(completion, committed, trace),
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
        start_ns = observability.now_ns()
        view = await self.read(self._store.get_run, run_id)
        self.observer.run_read(run_id, start_ns=start_ns, end_ns=observability.now_ns())
        return view

    async def _read_run(self, run_id: str) -> RunView:
        # The observer's own reads: not a GetRun call, so no span of their own.
        return await self.read(self._store.get_run, run_id)

    async def list_runs(self, run_filter: RunFilter) -> list[RunView]:
        """Runs, newest first."""
        return await self.read(self._store.list_runs, run_filter)

    async def cancel_run(self, run_id: str) -> RunView:
        """Cancels a run that has not ended."""
        cancel = functools.partial(self._store.cancel_run, run_id, now_ms=clock.now_ms())
        return await self._observed(cancel, self.observer.run_ended)

    def begin_shutdown(self) -> None:
        """Parked polls end empty now and new polls do not park."""
        self.signals.close()

    async def close(self) -> None:
        """Waits for background work and for store calls in flight, then closes the store."""
        if self._listener is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._listener.stop)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        # Before the store closes: pending hooks may still read runs.
        await self.observer.close()
        await self._commits.drain()
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        self._store.close()
