"""Group commit: the store calls of concurrent RPCs share transactions and commits.

``GroupCommitter.submit(call)`` queues a store call (a closure over one ``Store`` method) and returns
a future settled once the call's transaction has committed. Queued calls run together in one
``Store.grouped()`` transaction:

- On an inline store (SQLite) the group runs on the event loop, at the start of the loop's next
  turn: the calls of the RPCs that arrived together. Each call runs in a savepoint, so one that
  raises leaves nothing behind and the others go on.
- On a networked store (PostgreSQL) up to ``max_groups`` groups run at once (one connection each);
  calls queue while those are busy, so groups grow with load and a lone call starts at once. Where
  the store is ``cooperative`` a group is a task on the loop: its code runs in a greenlet
  (``sqlalchemy.util.concurrency.greenlet_spawn``) and its waits for the server are awaited, so the
  loop serves RPCs meanwhile and no thread is woken to run it, nor the loop to hear of it. Otherwise
  groups run in the store's thread pool. A savepoint costs two round trips there, so a group has
  none: a call that raises aborts its group, which is rolled back and its calls replayed one
  transaction each.

Either way a caller hears of its call only after the commit that made it durable, and a failed
commit fails every call in the group: nothing is acknowledged that is not committed. A call may
come with an ``observe`` hook, handed its result once committed even when its caller went away
meanwhile: a span is emitted from the one commit that ended what it describes, so a cancelled RPC
must not take the span with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar, cast

from sqlalchemy.util.concurrency import greenlet_spawn

from orchestrator import errors
from orchestrator.engine.model import ready_apps
from orchestrator.store.base import GroupAborted, Store
from orchestrator.store.dialect import BLOCK_LOOP_UNTIL
from orchestrator.wakeups import Handoff

logger = logging.getLogger("orchestrator.commits")

# Groups in flight at once on a threaded store. Two keep both sides busy (one group waits for its
# commit while the next one runs its statements), and every call beyond them waits to join a
# group: measured on 2 cores with PostgreSQL, 2 groups reach 510 steps/s where 8 (one per pooled
# connection) reach 470, with ~2 calls per group and each group's transaction overhead repeated.
GROUPS_IN_FLIGHT = 2
# Where groups run on the loop (``Store.cooperative``), one that starts while no other runs and none
# ended in the last IDLE_BEFORE_BLOCKING_S starts at once, in the callback that takes its calls, and
# blocks the loop while it waits for the server, for BLOCKING_BUDGET_S at most; past that it awaits
# like any other group. On an idle loop there is nothing else to serve meanwhile, and waking the loop
# for each of the server's answers cost a lone call as much as the thread hops did (measured, paired
# against groups in threads: a first step or a resume 0.10-0.16 ms sooner; awaiting alone gained
# none). Under load, groups follow each other closely and await: blocking the loop whenever no
# other group ran halved throughput (1,970 -> 990 steps/s). The budget bounds what a slow server (a
# lock wait, a stalled fsync) can cost the loop; without one a lone group gained 0.25-0.3 ms.
IDLE_BEFORE_BLOCKING_S = 0.005
BLOCKING_BUDGET_S = 0.004

T = TypeVar("T")
Call = Callable[[], Any]
Observe = Callable[[Any], None]
# A queued call: the call, its caller's future, the handoff it runs for (if any), its observe hook.
Queued = tuple[Call, "asyncio.Future[Any]", Handoff | None, Observe | None]
# What a call produced: (its caller's future, its value, the error it raised, the handoff it ran
# for, its observe hook).
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None, Handoff | None, Observe | None]
# The claims an app's parked pollers left for its work.
Handoffs = Callable[[str], list[Handoff]]


class GroupCommitter:
    """Queues store calls and runs them in group commits (see the module docstring)."""

    def __init__(self, store: Store, executor: Executor, *, max_groups: int, handoffs: Handoffs) -> None:
        self._store = store
        self._executor = executor
        self._inline = store.inline
        self._cooperative = store.cooperative  # tested after inline, which runs groups itself
        # The groups running as tasks on the loop (``cooperative``), until they settled.
        self._tasks: set[asyncio.Future[list[Outcome]]] = set()
        # When the last group ended (the loop's clock).
        self._last_end = -IDLE_BEFORE_BLOCKING_S
        self._max_groups = max_groups
        self._handoffs = handoffs
        self._pending: list[Queued] = []
        self._scheduled = False
        self._in_flight = 0

    def submit(self, call: Callable[[], T], observe: Callable[[T], None] | None = None) -> asyncio.Future[T]:
        """Queues ``call``; the future settles once its transaction committed (or failed), and
        ``observe`` gets the result of a committed call even if the future was cancelled by then."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((call, future, None, observe))
        self._schedule(loop)
        return future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._scheduled or not self._pending or self._in_flight >= self._max_groups:
            return
        self._scheduled = True
        loop.call_soon(self._start_group, loop)

    def _start_group(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        # A caller that went away before its call ran (a client cancel) is skipped: nothing was done.
        batch = [queued for queued in self._pending if not queued[1].cancelled()]
        self._pending = []
        if not batch:
            return
        if self._inline:
            _settle(self._run_group(batch, self._handoffs))
            return
        self._in_flight += 1
        running: asyncio.Future[list[Outcome]]
        if self._cooperative:
            group = greenlet_spawn(self._run_group, batch, self._handoffs)
            # The group's greenlet runs in a context of its own (the store keeps the open group
            # there): a copy of it, made by a task or a callback created while the group is open,
            # would carry the group into calls that are not part of it.
            context = contextvars.copy_context()
            if self._in_flight == 1 and loop.time() - self._last_end >= IDLE_BEFORE_BLOCKING_S:
                # A lone group on a quiet loop starts here and may block it for a while (below).
                context.run(BLOCK_LOOP_UNTIL.set, time.monotonic() + BLOCKING_BUDGET_S)
                try:
                    first = context.run(group.send, None)
                except StopIteration as done:
                    self._group_ended(loop, done.value)
                    return
                except Exception:  # the greenlet machinery itself: the group's errors are outcomes
                    logger.exception("group commit failed to start")
                    failed = errors.StoreUnavailable("the store could not run a group commit")
                    self._group_ended(loop, [(future, None, failed, None, None) for _, future, _, _ in batch])
                    return
                running = loop.create_task(_started(group, first), context=context)
            else:
                running = loop.create_task(group, context=context)
            self._tasks.add(running)
            running.add_done_callback(self._tasks.discard)
        else:
            running = loop.run_in_executor(self._executor, self._run_group, batch, self._handoffs)
        running.add_done_callback(lambda done: self._group_done(loop, batch, done))

    async def drain(self) -> None:
        """Waits for the groups running on the loop (a threaded store's are waited for by shutting
        its thread pool down)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _group_done(
        self, loop: asyncio.AbstractEventLoop, batch: Sequence[Queued], done: asyncio.Future[list[Outcome]]
    ) -> None:
        if done.cancelled() or done.exception() is not None:
            # Only the executor or the task itself failing lands here (shutdown): the group's own
            # errors are outcomes. Nothing may be reported done.
            failure = errors.StoreUnavailable("the store is shutting down")
            self._group_ended(loop, [(future, None, failure, None, None) for _, future, _, _ in batch])
        else:
            self._group_ended(loop, done.result())

    def _group_ended(self, loop: asyncio.AbstractEventLoop, outcomes: Sequence[Outcome]) -> None:
        self._in_flight -= 1
        self._last_end = loop.time()
        _settle(outcomes)
        self._schedule(loop)

    def _run_group(self, batch: Sequence[Queued], handoffs: Handoffs | None) -> list[Outcome]:
        """Runs one group (on the loop, in a greenlet there, or in a store thread); returns every
        call's outcome."""
        queue: list[Queued] = list(batch)
        outcomes: list[Outcome] = []
        try:
            with self._store.grouped():
                ran = 0
                while ran < len(queue):
                    call, future, handoff, observe = queue[ran]
                    ran += 1
                    self._store.next_call_is_last(ran == len(queue))
                    try:
                        value = call()
                    except (GroupAborted, errors.CommitOutcomeUnknown):
                        raise  # the whole group is over: replayed alone, or (unknown) reported
                    except Exception as exc:  # this call's savepoint rolled back; the rest go on
                        outcomes.append((future, None, exc, handoff, observe))
                        continue
                    outcomes.append((future, value, None, handoff, observe))
                    if handoffs is not None:
                        for app_id in ready_apps(value):
                            queue.extend((h.claim, h.future, h, h.observe) for h in handoffs(app_id))
        except GroupAborted:
            # A call failed where savepoints are not used: the group rolled back; each call (and
            # each claim handed off so far) now runs alone, so that only the failing one fails.
            outcomes = [_alone(*queued) for queued in queue]
        except Exception as exc:
            # The commit failed: none of the calls took effect, so none may be reported done.
            if not isinstance(exc, errors.OrchestratorError):
                logger.exception("group commit failed")
                exc = errors.StoreUnavailable(f"database unavailable: {exc}")
            return [(future, None, exc, handoff, None) for _, future, handoff, _ in queue]
        # Handed-off pollers first: their replies carry the work the other calls made ready.
        outcomes.sort(key=lambda outcome: outcome[3] is None)
        return outcomes


async def _started(group: Coroutine[Any, Any, T], first: Any) -> T:
    """Runs the rest of ``group``, a coroutine started by hand that yielded ``first`` (the future
    it waits for), as a task would have."""
    return await _Resume(group, first)


class _Resume(Awaitable[T]):
    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self._coro, self._first = coro, first

    def __await__(self) -> Generator[Any, Any, T]:
        yielded = self._first
        while True:
            try:
                value = yield yielded
            except BaseException as exc:  # the task's cancellation: into the coroutine
                step = functools.partial(self._coro.throw, exc)
            else:
                step = functools.partial(self._coro.send, value)
            try:
                yielded = step()
            except StopIteration as done:
                return cast(T, done.value)


def _alone(
    call: Call, future: asyncio.Future[Any], handoff: Handoff | None, observe: Observe | None
) -> Outcome:
    try:
        return (future, call(), None, handoff, observe)
    except Exception as exc:
        return (future, None, exc, handoff, observe)


def _settle(outcomes: Sequence[Outcome]) -> None:
    for future, value, error, handoff, observe in outcomes:
        if error is None and observe is not None:
            try:
                observe(value)
            except Exception:  # telemetry never fails the orchestrator: log and go on
                logger.warning("telemetry hook failed", exc_info=True)
        if future.done():
            if handoff is not None and error is None:
                # The poller stopped waiting before its claim committed: hand its work back.
                handoff.abandoned(value)
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
