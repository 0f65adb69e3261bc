"""The orchestrator's async facade: store calls, long polls and wake-ups.

The API layer calls this with validated domain requests; this layer calls the synchronous store,
then turns what the store reports into wake-ups: parked polls of an app are woken when its work may
exist, and the scheduler is poked when a nearer deadline appears. It also hands what a call reports
to the observer (traces, metrics) once the call committed, even if the caller went away meanwhile.

Where store calls run depends on the store (``Store.inline``). SQLite's are short local
transactions: they run right on the event loop, one at a time, which also serialises wait
registration against event ingest. Handing them to a thread would cost more than the transaction
(a thread hop, and the GIL passed back and forth while the loop serves RPCs). And they are group
committed: the calls made during one turn of the loop (the RPCs that arrived together) run at the
start of the next turn in one transaction, each in its own savepoint, and every caller is answered
after the one commit. Only reads that may be long (GetRun, ListRuns) go to a thread with a
connection of their own. PostgreSQL's calls wait on the network, so they all run in a pool of
threads, one transaction each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from orchestrator import clock, errors, logs, metrics, observability, tracing
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
from orchestrator.wakeups import ReplicaListener, Subscription, WorkSignals

logger = logging.getLogger("orchestrator.service")

T = TypeVar("T")


def _observe(observe: Callable[[T], None], result: T) -> None:
    try:
        observe(result)
    except Exception:  # telemetry never fails the orchestrator: log and go on
        logger.warning("telemetry hook failed", exc_info=True)


def _hand_result(observe: Callable[[T], None], future: asyncio.Future[T]) -> None:
    """A done callback: ``observe(result)`` for a future that has one (not cancelled or failed)."""
    if not future.cancelled() and future.exception() is None:
        _observe(observe, future.result())


def _ready_apps(result: object) -> frozenset[str]:
    """The apps whose work a store call's result says it made ready."""
    wakeups = result if isinstance(result, Wakeups) else getattr(result, "wakeups", None)
    return wakeups.ready_apps if isinstance(wakeups, Wakeups) else frozenset()


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
        self._inline = store.inline
        self._inline_reads = store.inline and store.inline_reads
        # Inline store calls waiting for the next group commit, with the futures of their callers.
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._executor = ThreadPoolExecutor(
            max_workers=store.max_concurrency, thread_name_prefix="orchestrator-store"
        )
        self._background: set[asyncio.Future[Any]] = set()
        self.signals = WorkSignals()
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
        """Runs a store call and returns once it is committed: in the next group commit for an
        inline store, else in the store's thread pool."""
        return await self._submit(functools.partial(fn, *args, **kwargs))

    def _submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        if not self._inline:
            return loop.run_in_executor(self._executor, call)
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((call, future))
        if len(self._pending) == 1:
            loop.call_soon(self._commit_pending)
        return future

    def _observed(self, call: Callable[[], T], observe: Callable[[T], None]) -> asyncio.Future[T]:
        """Submits a store call like ``_submit``, and hands its result to ``observe`` on the loop
        once it committed, whether or not its caller still waits for it: a span is emitted from the
        result of the one commit that ended what it describes (a repeat of the call reports nothing),
        so a caller that went away (a cancelled RPC) must not take the span with it."""
        loop = asyncio.get_running_loop()
        if self._inline:
            # The call runs in a later group commit, or not at all when its caller went away first.
            future = self._submit(call)
            future.add_done_callback(functools.partial(_hand_result, observe))
            return future
        # A store thread commits even when the awaiting caller was cancelled meanwhile.
        running = self._executor.submit(call)

        def committed(done: concurrent.futures.Future[T]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody to tell
                loop.call_soon_threadsafe(_observe, observe, done.result())

        running.add_done_callback(committed)
        return asyncio.wrap_future(running, loop=loop)

    def _commit_pending(self) -> None:
        """Runs the pending inline calls in one transaction, then answers each caller.

        A call that makes an app's work ready also runs, in the same transaction, the claims that
        the app's parked pollers left (``Subscription.handoff``): their work is leased by the
        commit that made it ready, and their replies go out first."""
        batch: list[tuple[Callable[[], Any], asyncio.Future[Any], bool]] = [
            (call, future, False) for call, future in self._pending
        ]
        self._pending = []
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with self._store.grouped():
                ran = 0
                while ran < len(batch):
                    call, future, _ = batch[ran]
                    ran += 1
                    if future.cancelled():
                        continue  # its caller went away before anything was done: skip it
                    try:
                        value = call()
                    except Exception as exc:  # this call's savepoint rolled back; the rest go on
                        outcomes.append((future, None, exc))
                        continue
                    outcomes.append((future, value, None))
                    for app_id in _ready_apps(value):
                        batch.extend((c, f, True) for c, f in self.signals.take_handoffs(app_id))
        except Exception as exc:
            # The commit failed: none of the calls took effect, so none may be reported done.
            failure = exc if isinstance(exc, errors.OrchestratorError) else errors.StoreUnavailable(
                f"database unavailable: {exc}"
            )
            if not isinstance(exc, errors.OrchestratorError):
                logger.exception("group commit failed")
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        handed = {id(future) for _, future, is_handoff in batch if is_handoff}
        # Handed-off pollers first: their replies carry the work the others' calls made ready.
        outcomes.sort(key=lambda outcome: id(outcome[0]) not in handed)
        for future, value, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

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
                    handoff = self._leave_handoff(sub, claim, worker_id)
                    try:
                        woken = await sub.wait(remaining)
                    except asyncio.CancelledError:
                        if handoff is not None and handoff.done():
                            self._release_abandoned(worker_id, handoff)
                        raise
                    result = self._handed(handoff)
                    if not result.items and not woken:
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

    def _leave_handoff(
        self, sub: Subscription, claim: Callable[..., ClaimResult], worker_id: str
    ) -> asyncio.Future[ClaimResult] | None:
        """Lets a group commit that makes this app's work ready claim it for the parked poller
        (inline stores). A poller gone by the time the claim commits hands its work back."""
        if not self._inline:
            return None
        future: asyncio.Future[ClaimResult] = asyncio.get_running_loop().create_future()
        sub.handoff = (lambda: claim(now_ms=clock.now_ms()), future)
        future.add_done_callback(functools.partial(_hand_result, self.observer.work_claimed))

        def settled(done: asyncio.Future[ClaimResult]) -> None:
            if sub.active:
                sub.wake()
            else:
                self._release_abandoned(worker_id, done)

        future.add_done_callback(settled)
        return future

    @staticmethod
    def _handed(handoff: asyncio.Future[ClaimResult] | None) -> ClaimResult:
        """What a group commit claimed for the parked poller, if it did (a failed commit: nothing)."""
        if handoff is None or not handoff.done() or handoff.cancelled() or handoff.exception() is not None:
            return ClaimResult(())
        return handoff.result()

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
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
        self._store.close()
