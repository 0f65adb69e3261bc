"""Long polls through the ``Orchestrator`` facade over a real store (no gRPC): a parked poller gets
the work an event made ready with its lease already committed; a poller that goes away never keeps
a run it did not receive; two parked pollers never share a run.

A parked poller leaves its claim behind (``Subscription.leave_handoff``) and the group commit that
makes the app's work ready runs it in the same transaction, then wakes the poller with its result
before answering anyone else (on PostgreSQL the group runs in a store thread). The promises hold
on both stores."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from sqlalchemy import Engine

from orchestrator import errors, tracing
from orchestrator.config import Settings
from orchestrator.engine.model import FunctionSpec, NewEvent, RunState, WorkItem
from orchestrator.service import Orchestrator
from orchestrator.store.sql import SqlStore
from tests.support.stores import commit_breaker, committed_event_ids, run_row
from tests.support.waiting import wait_until_async

# Long enough that a run seen again within a test was handed back, not found by lease expiry.
LEASE_SECONDS = 300.0


@pytest.fixture
async def orch(store: SqlStore) -> AsyncIterator[Orchestrator]:
    service = Orchestrator(store, Settings(db_url=store.url, lease_seconds=LEASE_SECONDS))
    await service.register_functions("crm", [FunctionSpec("f", ("a/b",), 4)])
    try:
        yield service
    finally:
        service.begin_shutdown()
        await service.close()  # idempotent: a test may have closed it to drain background work


@pytest.fixture
def service_log() -> Iterator[list[str]]:
    """The events ``orchestrator.service`` logs during the test (``poll.abandoned``, ...)."""
    logger = logging.getLogger("orchestrator.service")
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler, level = Collect(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def poll(orch: Orchestrator, worker: str, wait_s: float = 30.0) -> asyncio.Future[tuple[WorkItem, ...]]:
    return asyncio.ensure_future(
        orch.poll_work(
            app_id="crm",
            function_ids=(),
            worker_id=worker,
            max_items=1,
            max_wait=timedelta(seconds=wait_s),
        )
    )


def parked(orch: Orchestrator) -> int:
    """Pollers parked on the app: those that left their claim behind after an empty one (the only
    sure sign they are waiting)."""
    subs = orch.signals._subs.get("crm", {})
    return sum(1 for sub in subs if sub.handoff is not None)


async def until_parked(orch: Orchestrator, count: int) -> None:
    await wait_until_async(
        lambda: parked(orch) == count, timeout=20, message=lambda: f"{count} parked (have {parked(orch)})"
    )


async def start_run(orch: Orchestrator) -> str:
    (run_id,) = (await orch.send_events([NewEvent("a/b")])).run_ids
    return run_id


async def test_a_parked_pollers_claim_commits_with_the_event_that_made_the_run(
    orch: Orchestrator, observer: Engine
) -> None:
    poller = poll(orch, "w1")
    await until_parked(orch, 1)
    run_id = await start_run(orch)
    # By the time the event's sender hears it committed, the poller has its run, leased in that
    # same commit: claiming by itself after a wake-up would take a transaction more, after the reply.
    assert poller.done()
    (item,) = poller.result()
    row = run_row(observer, run_id)
    assert (row.state, row.worker_id, row.lease_id) == (RunState.LEASED, "w1", item.lease_id)
    assert row.lease_expires_ms == item.lease_expires_ms
    assert item.run_id == run_id


class _Ended(SpanProcessor):
    """Notes the name of each span as it is handed over, in ``order``."""

    def __init__(self, order: list[str]) -> None:
        self._order = order

    def on_end(self, span: ReadableSpan) -> None:
        self._order.append(span.name)


async def test_a_parked_poller_gets_its_run_before_the_events_spans_are_built(store: SqlStore) -> None:
    # With tracing on, SendEvent's spans are built after the commit that started the run, but the
    # poller handed that run must not wait for them: its reply is the event's latency.
    order: list[str] = []
    settings = Settings(db_url=store.url, lease_seconds=LEASE_SECONDS)
    traced = Orchestrator(store, settings, tracer=tracing.Tracer(_Ended(order)))
    await traced.register_functions("crm", [FunctionSpec("f", ("a/b",), 4)])

    async def poll_then_note() -> tuple[WorkItem, ...]:
        items = await traced.poll_work(
            app_id="crm", function_ids=(), worker_id="w1", max_items=1, max_wait=timedelta(seconds=30)
        )
        order.append("work delivered")
        return items

    try:
        poller = asyncio.ensure_future(poll_then_note())
        await until_parked(traced, 1)
        run_id = await start_run(traced)
        (item,) = await asyncio.wait_for(poller, timeout=20)
        assert item.run_id == run_id
        await traced.observer.settled()
        assert "durable.v1.Orchestrator/SendEvent" in order, order
        assert order[0] == "work delivered", order
    finally:
        traced.begin_shutdown()
        await traced.close()


async def test_two_parked_pollers_one_run_exactly_one_gets_it_and_the_other_keeps_waiting(
    orch: Orchestrator,
) -> None:
    first, second = poll(orch, "w1"), poll(orch, "w2")
    await until_parked(orch, 2)
    run_id = await start_run(orch)
    done, _ = await asyncio.wait({first, second}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    (winner,) = done
    assert [item.run_id for item in winner.result()] == [run_id]
    assert winner is first  # handoffs are run oldest poller first
    waiting = second if winner is first else first
    await until_parked(orch, 1)
    assert not waiting.done()
    next_run = await start_run(orch)
    (item,) = await asyncio.wait_for(waiting, timeout=20)
    assert item.run_id == next_run


async def test_a_poller_cancelled_while_its_claim_commits_hands_the_run_back(
    orch: Orchestrator, service_log: list[str]
) -> None:
    run_id = await start_run(orch)
    poller = poll(orch, "w1")
    await asyncio.sleep(0)  # the poller subscribes and queues its claim, which will take the run
    poller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poller
    # Back at once, not when the lease expires: another poller gets the run.
    (again,) = await orch.poll_work(
        app_id="crm", function_ids=(), worker_id="w2", max_items=1, max_wait=timedelta(seconds=20)
    )
    assert again.run_id == run_id
    await orch.close()  # drains the background hand-back
    assert service_log.count("poll.abandoned") == 1  # the claim did take the run, and gave it back
    assert "lease.release_failed" not in service_log


# Where a parked poller is cancelled, relative to the group commit that runs its handoff: before
# the group (its claim is not run), between its claim and its wake-up (the committer hands the run
# back), or after its wake-up but before it resumed (the poller hands the run back itself). The
# cancellation comes from a hook of the observer, which the group commit calls for each committed
# result just before delivering it (the claim's: ``work_claimed``; the event's: ``events_ingested``).
CANCELLED = {
    "while parked": None,
    "before its claim was delivered": "work_claimed",
    "after its claim was delivered": "events_ingested",
}


def cancel_from_hook(
    orch: Orchestrator, monkeypatch: pytest.MonkeyPatch, hook: str, poller: asyncio.Future[object]
) -> Callable[[], None]:
    """Makes the observer's ``hook`` cancel ``poller`` the first time it is called once armed;
    returns the function that arms it."""
    original = getattr(orch.observer, hook)
    armed: list[bool] = []

    def cancelling(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        if armed and not poller.done():
            armed.clear()
            poller.cancel()

    monkeypatch.setattr(orch.observer, hook, cancelling)
    return lambda: armed.append(True)


@pytest.mark.parametrize("cancelled", list(CANCELLED))
async def test_a_parked_poller_cancelled_around_its_handoff_hands_back_what_it_got_once(
    orch: Orchestrator,
    observer: Engine,
    service_log: list[str],
    monkeypatch: pytest.MonkeyPatch,
    cancelled: str,
) -> None:
    poller = poll(orch, "w1")  # not started yet: the hook is in place before it leaves its handoff
    hook = CANCELLED[cancelled]
    arm = cancel_from_hook(orch, monkeypatch, hook, poller) if hook else poller.cancel
    await until_parked(orch, 1)
    arm()
    run_id = await start_run(orch)
    with pytest.raises(asyncio.CancelledError):
        await poller
    claimed_for_it = hook is not None
    assert (run_row(observer, run_id).worker_id == "w1") is claimed_for_it
    # Back at once, not when the lease expires: another poller gets the run.
    (again,) = await orch.poll_work(
        app_id="crm", function_ids=(), worker_id="w2", max_items=1, max_wait=timedelta(seconds=20)
    )
    assert again.run_id == run_id
    await orch.close()  # drains the background hand-back
    # Handed back exactly once when its claim ran (both paths see an abandoned claim: a second
    # release would meet a stale lease), and not at all when it did not.
    assert service_log.count("poll.abandoned") == (1 if claimed_for_it else 0)
    assert "lease.release_failed" not in service_log


@pytest.mark.parametrize("cancelled", [c for c, hook in CANCELLED.items() if hook])
async def test_a_run_handed_back_by_a_cancelled_poller_goes_to_another_parked_poller(
    orch: Orchestrator, observer: Engine, monkeypatch: pytest.MonkeyPatch, cancelled: str
) -> None:
    first, second = poll(orch, "w1"), poll(orch, "w2")
    arm = cancel_from_hook(orch, monkeypatch, str(CANCELLED[cancelled]), first)
    await until_parked(orch, 2)
    arm()
    run_id = await start_run(orch)
    with pytest.raises(asyncio.CancelledError):
        await first
    (item,) = await asyncio.wait_for(second, timeout=20)
    assert item.run_id == run_id
    assert run_row(observer, run_id).worker_id == "w2"


@pytest.mark.sqlite_only(
    "a PostgreSQL commit is broken by a dead connection, which the handed claim (run after) meets first"
)
async def test_a_parked_poller_whose_handoff_failed_with_its_commit_keeps_waiting(
    orch: Orchestrator, store: SqlStore, admin: Engine, observer: Engine
) -> None:
    poller = poll(orch, "w1")
    await until_parked(orch, 1)
    # An event and a call that breaks the commit, in one group: the event is not committed, nor
    # the claim the poller left, which ran in that group.
    sending = asyncio.ensure_future(orch.send_events([NewEvent("a/b", "{}", "e-lost")]))
    breaking = asyncio.ensure_future(orch.call(commit_breaker(store, admin)))
    for failed in (sending, breaking):
        with pytest.raises(errors.StoreUnavailable):
            await failed
    assert committed_event_ids(observer) == set()
    await until_parked(orch, 1)  # woken by its failed handoff, it claimed again and parked again
    assert not poller.done()
    run_id = await start_run(orch)
    (item,) = await asyncio.wait_for(poller, timeout=20)
    assert item.run_id == run_id
