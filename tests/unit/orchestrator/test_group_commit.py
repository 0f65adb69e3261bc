"""Group commit on a real store: ``SqlStore.grouped()`` and ``commits.GroupCommitter`` driving it
from an asyncio loop, on SQLite (inline, a savepoint per call) and PostgreSQL (groups on the loop in
greenlets that await the server, a failing call replays the group call by call).

What they promise: the calls of a group commit together and nothing of them is seen before; a call
that raises (on PostgreSQL, also one whose connection dies under it) fails alone and leaves nothing
behind while the others take effect; a commit that fails fails every call; a caller hears of its
call only after the commit; a caller gone before its group started is skipped; claims handed off to
parked pollers run in the group that made the work ready and wake their pollers first, and a claim
whose poller stopped waiting goes to its ``abandoned`` hook."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, text

from orchestrator import commits, errors
from orchestrator.commits import GroupCommitter
from orchestrator.engine.model import (
    ClaimResult,
    Completion,
    FunctionSpec,
    IngestResult,
    NewEvent,
    RunFilter,
    RunState,
    SendEvents,
    StepOutput,
    WorkItem,
)
from orchestrator.store import postgres
from orchestrator.store.base import GroupAborted
from orchestrator.store.sql import MAX_TX_ATTEMPTS, SqlStore
from orchestrator.wakeups import Subscription, WorkSignals
from tests.support.stores import (
    advisory_lock_waiters,
    cap_database_size,
    commit_breaker,
    committed_event_ids,
    run_row,
    terminate_own_connection,
)
from tests.support.waiting import wait_until_async

T0 = 1_800_000_000_000
LEASE = 30_000


def register(store: SqlStore) -> None:
    store.register_functions("crm", [FunctionSpec("f", ("a/b",), 4)], now_ms=T0)
    store.register_functions("mail", [FunctionSpec("notify", ("mail/send",), 4)], now_ms=T0)


def send(store: SqlStore, event_id: str | None = None, data: str = "{}") -> IngestResult:
    return store.ingest_events([NewEvent("a/b", data, event_id)], now_ms=T0)


def claim(store: SqlStore, worker: str = "w", n: int = 10) -> ClaimResult:
    return store.claim_work(
        app_id="crm", function_ids=(), worker_id=worker, max_items=n, now_ms=T0, lease_ms=LEASE
    )


def complete(store: SqlStore, item: WorkItem, step_id: str, outcome: Any, *, max_steps: int = 1000) -> Any:
    completion = Completion(item.run_id, item.lease_id, step_id, outcome, max_steps=max_steps)
    return store.complete_step(completion, now_ms=T0, lease_ms=LEASE)


def stale_and_current(store: SqlStore) -> tuple[WorkItem, WorkItem]:
    """A run claimed, released and claimed again: its first lease is stale, its second current."""
    (run_id,) = send(store, "e-setup").run_ids
    (first,) = claim(store).items
    store.release_work(run_id, first.lease_id, now_ms=T0)
    (second,) = claim(store).items
    return first, second


def send_step_over_the_limit(store: SqlStore, item: WorkItem) -> Callable[[], Any]:
    """A call that writes, then raises: a send-events step ingests its event (and starts a run of
    the mail app) before finding that the run may record no more steps (LimitExceeded)."""
    outcome = SendEvents((NewEvent("mail/send", "{}", "m-1"),))
    return lambda: complete(store, item, "notify", outcome, max_steps=0)


@pytest.fixture
def executor(store: SqlStore) -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=store.max_concurrency, thread_name_prefix="test-store") as pool:
        yield pool


@pytest.fixture
def signals() -> WorkSignals:
    return WorkSignals()


@pytest.fixture
async def committer(
    store: SqlStore, executor: ThreadPoolExecutor, signals: WorkSignals
) -> AsyncIterator[GroupCommitter]:
    # One group at a time: the calls submitted in one turn of the loop all land in the same group.
    yield GroupCommitter(store, executor, max_groups=1, handoffs=signals.take_handoffs)


async def assert_the_store_goes_on(
    store: SqlStore, committer: GroupCommitter, observer: Engine, committed_before: set[str]
) -> None:
    """A new group after a failed or unusual one commits, and starts its run, as any other."""
    after = await committer.submit(lambda: send(store, "e-after"))
    assert committed_event_ids(observer) == committed_before | {"e-after"}
    assert len(after.run_ids) == 1


async def settled(*futures: asyncio.Future[Any]) -> list[Any]:
    """Each future's value, or the exception it failed with."""
    return await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=30)


# -- SqlStore.grouped() ----------------------------------------------------------------------------


def test_the_calls_of_a_group_share_one_transaction_seen_by_others_only_at_its_end(
    store: SqlStore, observer: Engine
) -> None:
    register(store)
    with ThreadPoolExecutor(max_workers=1) as reader, store.grouped():
        first = send(store, "e1")
        second = send(store, "e2")
        # The claim sees the runs the earlier calls started: the same transaction.
        claimed = claim(store)
        assert {i.run_id for i in claimed.items} == {*first.run_ids, *second.run_ids}
        # Nothing yet for another connection, nor for the store's own reads on another thread
        # (GetRun and ListRuns run on one), which do not wait for the group either.
        assert committed_event_ids(observer) == set()
        assert reader.submit(store.list_runs, RunFilter()).result(timeout=30) == []
    assert committed_event_ids(observer) == {"e1", "e2"}
    for item in claimed.items:
        row = run_row(observer, item.run_id)
        assert (row.state, row.lease_id) == (RunState.LEASED, item.lease_id)


def test_grouped_is_not_reentrant(store: SqlStore) -> None:
    with store.grouped(), pytest.raises(RuntimeError, match="not reentrant"), store.grouped():
        pass


@pytest.mark.sqlite_only("savepoints per call are SQLite's way; PostgreSQL's is the next test")
def test_sqlite_a_call_that_raises_in_a_group_is_rolled_back_alone(store: SqlStore, observer: Engine) -> None:
    register(store)
    stale, current = stale_and_current(store)
    over_the_limit = send_step_over_the_limit(store, current)
    with store.grouped():
        send(store, "e1")
        with pytest.raises(errors.LimitExceeded):
            over_the_limit()
        with pytest.raises(errors.StaleLease):
            complete(store, stale, "s", StepOutput("1"))
        send(store, "e2")
    assert committed_event_ids(observer) == {"e-setup", "e1", "e2"}  # not m-1: its call rolled back
    assert store.list_runs(RunFilter(app_id="mail")) == []
    assert store.get_run(current.run_id).steps == ()


@pytest.mark.postgres_only("without savepoints a failing call aborts the group: PostgreSQL's way")
def test_postgres_a_call_that_raises_in_a_group_aborts_the_whole_group(
    store: SqlStore, observer: Engine
) -> None:
    register(store)
    _, current = stale_and_current(store)
    over_the_limit = send_step_over_the_limit(store, current)
    with pytest.raises(GroupAborted) as info, store.grouped():
        send(store, "e1")
        over_the_limit()
    assert isinstance(info.value.__cause__, errors.LimitExceeded)
    assert committed_event_ids(observer) == {"e-setup"}  # neither e1 nor m-1
    assert store.list_runs(RunFilter(app_id="mail")) == []


# -- GroupCommitter --------------------------------------------------------------------------------


async def test_a_failing_call_fails_alone_and_the_rest_of_its_group_takes_effect(
    store: SqlStore, committer: GroupCommitter, observer: Engine
) -> None:
    register(store)
    stale, current = stale_and_current(store)
    ran: list[str] = []

    def counted(name: str, call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            ran.append(name)
            return call()

        return run

    calls = {
        "send": lambda: send(store),  # no event id: run twice for real, it would start two runs
        "stale": lambda: complete(store, stale, "s", StepOutput("1")),
        "partial": send_step_over_the_limit(store, current),
        "missing": lambda: store.cancel_run("no-such-run", now_ms=T0),
        "send-last": lambda: send(store, "e-last"),
        "claim": lambda: claim(store, worker="w2"),
    }
    futures = [committer.submit(counted(name, call)) for name, call in calls.items()]
    sent, stale_err, partial_err, missing_err, sent_last, claimed = await settled(*futures)

    assert isinstance(stale_err, errors.StaleLease)
    assert isinstance(partial_err, errors.LimitExceeded)
    assert isinstance(missing_err, errors.NotFound)
    assert isinstance(sent, IngestResult) and isinstance(sent_last, IngestResult)
    assert {i.run_id for i in claimed.items} == {*sent.run_ids, *sent_last.run_ids}
    # SQLite rolled each failing call back to its savepoint; PostgreSQL rolled the group back at
    # the first failure and replayed every call alone.
    if store.inline:
        assert ran == list(calls)
    else:
        assert ran == ["send", "stale", *calls]
    # Each effect once; nothing of the failing calls (the send step's event and the run it started).
    assert committed_event_ids(observer) == {"e-setup", *sent.ids, "e-last"}
    assert len(store.list_runs(RunFilter(app_id="crm"))) == 3
    assert store.list_runs(RunFilter(app_id="mail")) == []
    assert store.get_run(current.run_id).steps == ()
    assert run_row(observer, current.run_id).lease_id == current.lease_id


async def test_callers_hear_of_their_calls_only_after_the_group_committed(
    store: SqlStore, committer: GroupCommitter, observer: Engine
) -> None:
    register(store)
    seen: dict[str, Any] = {}

    def look() -> None:
        # Runs after the first call, in the same group: neither committed nor answered yet.
        seen["first answered"] = first.done()
        seen["committed"] = committed_event_ids(observer)

    first = committer.submit(lambda: send(store, "e1"))
    second = committer.submit(look)
    await first
    assert committed_event_ids(observer) == {"e1"}  # durable by the time its caller hears
    await second
    assert seen == {"first answered": False, "committed": set()}


async def test_a_call_whose_caller_went_away_before_its_group_started_is_skipped(
    store: SqlStore, committer: GroupCommitter, observer: Engine
) -> None:
    register(store)
    ran: list[str] = []
    gone = committer.submit(lambda: (ran.append("gone"), send(store, "e-gone")))
    kept = committer.submit(lambda: (ran.append("kept"), send(store, "e-kept")))
    gone.cancel()
    await kept
    assert ran == ["kept"]
    assert committed_event_ids(observer) == {"e-kept"}


@pytest.mark.postgres_only("only a networked store has groups in flight while calls queue")
async def test_calls_queued_behind_a_running_group_form_the_next_group_without_cancelled_callers(
    store: SqlStore, committer: GroupCommitter, observer: Engine, admin: Engine
) -> None:
    register(store)
    ran: list[str] = []

    def blocking() -> None:
        ran.append("blocking")
        send(store, "e-blocking")  # waits on the server for the ingest lock until the test lets it go

    with admin.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": postgres.EVENTS_LOCK_KEY})
        running = committer.submit(blocking)  # its group takes the only slot
        # In flight: awaiting the server, with the loop free to take more calls meanwhile.
        await wait_until_async(lambda: advisory_lock_waiters(admin) == 1, timeout=30,
                               message="the group's call to wait for the ingest lock")
        queued = committer.submit(lambda: (ran.append("queued"), send(store, "e-queued")))
        gone = committer.submit(lambda: (ran.append("gone"), send(store, "e-gone")))
        seen: dict[str, bool] = {}
        last = committer.submit(
            lambda: (ran.append("last"), seen.setdefault("queued answered", queued.done()))
        )
        gone.cancel()
        assert not running.done()
        holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": postgres.EVENTS_LOCK_KEY})
    outcomes = await settled(running, queued, last)
    assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
    assert ran == ["blocking", "queued", "last"]
    assert seen == {"queued answered": False}  # the queued calls ran as one group
    assert committed_event_ids(observer) == {"e-blocking", "e-queued"}


async def test_a_commit_that_fails_fails_every_call_of_the_group(
    store: SqlStore, committer: GroupCommitter, observer: Engine, admin: Engine
) -> None:
    register(store)
    send(store, "e-before")
    futures = [
        committer.submit(lambda: send(store, "e1")),
        committer.submit(lambda: claim(store)),
        committer.submit(commit_breaker(store, admin)),  # last: see commit_breaker
    ]
    outcomes = await settled(*futures)
    # Unavailable (on PostgreSQL: CommitOutcomeUnknown, since the connection broke under the COMMIT).
    assert all(isinstance(o, errors.StoreUnavailable) for o in outcomes), outcomes
    assert committed_event_ids(observer) == {"e-before"}
    (run,) = store.list_runs(RunFilter())
    assert run_row(observer, run.id).state == RunState.READY  # the claim did not take effect
    # The store goes on with a new connection.
    await assert_the_store_goes_on(store, committer, observer, {"e-before"})


@pytest.mark.sqlite_only("a full disk is SQLite's failure; PostgreSQL's lost connection is the next test")
async def test_a_full_disk_fails_one_call_of_a_sqlite_group_as_store_unavailable(
    store: SqlStore, committer: GroupCommitter, observer: Engine
) -> None:
    register(store)
    cap_database_size(store)
    big = '{"blob": "' + "x" * 1_000_000 + '"}'
    # Outside a group the store reports a full disk as UNAVAILABLE (retry later) ...
    with pytest.raises(errors.StoreUnavailable, match="full"):
        send(store, "e-big", big)
    cap_database_size(store)  # the failed write dropped the connection, and its limit with it
    # ... and inside one too, while the other calls of the group go on.
    small, too_big, small_too = await settled(
        committer.submit(lambda: send(store, "e1")),
        committer.submit(lambda: send(store, "e-big", big)),
        committer.submit(lambda: send(store, "e2")),
    )
    assert isinstance(too_big, errors.StoreUnavailable), repr(too_big)
    assert "full" in too_big.message
    assert isinstance(small, IngestResult) and isinstance(small_too, IngestResult)
    assert committed_event_ids(observer) == {"e1", "e2"}


@pytest.mark.postgres_only("a connection lost under one call is PostgreSQL's failure")
async def test_a_connection_lost_under_a_call_of_a_postgres_group_fails_that_call_alone(
    store: SqlStore, committer: GroupCommitter, observer: Engine
) -> None:
    register(store)
    sends: list[str] = []
    pids: list[int] = []

    def sending(event_id: str) -> Callable[[], IngestResult]:
        def call() -> IngestResult:
            sends.append(event_id)
            return send(store, event_id)

        return call

    first, lost, second = await settled(
        committer.submit(sending("e1")),
        committer.submit(lambda: terminate_own_connection(store, pids)),
        committer.submit(sending("e2")),
    )
    # The group rolled back and its calls ran again one by one: the others committed; the one whose
    # connection died ran again, each time on a new connection, until its attempts were used up.
    assert sends == ["e1", "e1", "e2"]
    assert isinstance(first, IngestResult) and isinstance(second, IngestResult)
    assert committed_event_ids(observer) == {"e1", "e2"}
    assert isinstance(lost, errors.StoreUnavailable), repr(lost)
    assert len(pids) == 1 + MAX_TX_ATTEMPTS and len(set(pids)) == len(pids)
    await committer.submit(lambda: send(store, "e-after"))
    assert committed_event_ids(observer) == {"e1", "e2", "e-after"}


async def delivered(name: str, sub: Subscription, order: list[str]) -> None:
    """Waits for ``sub``'s wake-up, then notes ``name`` in ``order`` (as its poller resumes)."""
    await sub.wait(30)
    order.append(name)


async def test_handed_off_claims_run_in_the_group_that_made_work_ready_and_settle_first(
    store: SqlStore, committer: GroupCommitter, signals: WorkSignals, observer: Engine
) -> None:
    register(store)
    order: list[str] = []
    abandoned: list[Any] = []

    def noting(name: str, future: asyncio.Future[Any]) -> asyncio.Future[Any]:
        future.add_done_callback(lambda _: order.append(name))
        return future

    with (
        signals.subscribe("crm") as oldest,
        signals.subscribe("crm") as woken,
        signals.subscribe("crm") as newest,
        signals.subscribe("mail") as other_app,
    ):
        for name, sub in (("oldest", oldest), ("woken", woken), ("newest", newest), ("other app", other_app)):
            sub.leave_handoff(lambda worker=name: claim(store, worker=worker, n=1), abandoned.append)
        woken.wake()  # a woken poller claims by itself: its handoff is left alone
        pollers = [
            asyncio.ensure_future(delivered(name, sub, order))
            for name, sub in (("oldest", oldest), ("newest", newest))
        ]
        before = noting("before", committer.submit(lambda: None))
        sent = noting("send", committer.submit(lambda: send(store, "e1")))
        after = noting("after", committer.submit(lambda: None))
        await settled(before, sent, after, *pollers)

        (run_id,) = sent.result().run_ids
        (item,) = oldest.handed().items
        assert (item.run_id, item.event.id) == (run_id, "e1")
        assert newest.handed().items == ()  # one run: the oldest poller has it
        assert woken.handed() is None and woken.handoff is not None
        assert not other_app.woken and other_app.handoff is not None
        # The pollers resume first, their work already leased, before any caller of the group hears.
        assert order == ["oldest", "newest", "before", "send", "after"]
        assert abandoned == []
        # The claim committed with the event that started the run.
        row = run_row(observer, run_id)
        assert (row.state, row.worker_id, row.lease_id) == (RunState.LEASED, "oldest", item.lease_id)

        # Each handoff is given out once: the next run is left for the pollers to claim.
        (next_run,) = (await committer.submit(lambda: send(store, "e2"))).run_ids
        assert run_row(observer, next_run).state == RunState.READY


@pytest.mark.postgres_only("only a pipelining store sends the COMMIT with a claim")
async def test_a_claim_that_ends_a_group_commits_it_with_its_own_round_trip(
    store: SqlStore, committer: GroupCommitter, observer: Engine
) -> None:
    register(store)
    sent, claimed = await settled(
        committer.submit(lambda: send(store, "e1")), committer.submit(lambda: claim(store))
    )
    assert isinstance(claimed, ClaimResult)
    (item,) = claimed.items
    assert item.run_id == sent.run_ids[0]
    assert committed_event_ids(observer) == {"e1"}
    assert run_row(observer, item.run_id).state == RunState.LEASED
    # The transaction is over, and the next group starts a new one on the same connection.
    await assert_the_store_goes_on(store, committer, observer, {"e1"})


@pytest.mark.postgres_only("only a pipelining store sends the COMMIT with a claim")
async def test_a_group_whose_connection_breaks_under_a_claims_commit_is_reported_never_replayed(
    store: SqlStore, committer: GroupCommitter, observer: Engine, admin: Engine
) -> None:
    register(store)
    send(store, "e-before")
    breaker = commit_breaker(store, admin)

    def break_then_claim() -> ClaimResult:
        breaker()
        return claim(store)

    outcomes = await settled(
        committer.submit(lambda: send(store, "e1")),
        committer.submit(break_then_claim),  # last: its claim carries the group's COMMIT
    )
    # The COMMIT may have reached the server: both calls are reported, and neither is run again
    # alone (which would have committed e1 behind its caller's back).
    assert [type(o) for o in outcomes] == [errors.CommitOutcomeUnknown] * 2, outcomes
    assert committed_event_ids(observer) == {"e-before"}
    await assert_the_store_goes_on(store, committer, observer, {"e-before"})


@pytest.mark.sqlite_only("handoffs run only where groups run on the loop (inline stores)")
async def test_a_claim_handed_off_by_a_poller_gone_before_it_committed_goes_to_abandoned(
    store: SqlStore, committer: GroupCommitter, signals: WorkSignals, observer: Engine
) -> None:
    register(store)
    abandoned: list[ClaimResult] = []
    observed: list[ClaimResult] = []
    with signals.subscribe("crm") as parked:
        parked.leave_handoff(lambda: claim(store, worker="parked"), abandoned.append, observed.append)
        poller = asyncio.ensure_future(parked.wait(30))
        sent = committer.submit(lambda: send(store, "e1"))
        # Runs in the group after the event, before the claim handed off for the app it made ready.
        gone = committer.submit(poller.cancel)
        await settled(sent, gone)
    assert poller.cancelled()
    (run_id,) = sent.result().run_ids
    # The claim committed: its result is observed, and handed to ``abandoned`` (to give the run
    # back), as nobody waits for it.
    (result,) = abandoned
    assert [item.run_id for item in result.items] == [run_id]
    assert observed == [result]
    assert run_row(observer, run_id).worker_id == "parked"


@pytest.mark.postgres_only("only a pipelining store acts on hints")
async def test_an_event_sent_on_a_stale_hint_replays_its_group_and_the_parked_poller_gets_every_run(
    store: SqlStore, committer: GroupCommitter, signals: WorkSignals
) -> None:
    # The event, its runs and the handed-off claim go in one round trip with the COMMIT; the guard
    # refuses the hint (a second function is triggered now), so the group is replayed call by call.
    register(store)  # with no hints yet (``no_hints``)
    await committer.submit(lambda: send(store, "e1"))  # the hint: a/b starts crm's f, no waits
    store.register_functions("crm", [FunctionSpec("g", ("a/b",), 4)], now_ms=T0)
    abandoned: list[Any] = []
    with signals.subscribe("crm") as parked:
        parked.leave_handoff(lambda: claim(store, worker="parked"), abandoned.append)
        poller = asyncio.ensure_future(parked.wait(30))
        sent = await committer.submit(lambda: send(store, "e2"))
        assert await poller is True
        handed = parked.handed()
    assert len(sent.run_ids) == 2
    assert isinstance(handed, ClaimResult)
    # The run of e1 was never claimed: the poller gets it too.
    assert set(sent.run_ids) < {item.run_id for item in handed.items}
    assert abandoned == []


@pytest.mark.sqlite_only("handoffs run only where groups run on the loop (inline stores)")
async def test_a_handed_off_claim_fails_with_the_commit_of_its_group(
    store: SqlStore, committer: GroupCommitter, signals: WorkSignals, observer: Engine, admin: Engine
) -> None:
    register(store)
    abandoned: list[Any] = []
    with signals.subscribe("crm") as parked:
        parked.leave_handoff(lambda: claim(store, worker="parked"), abandoned.append)
        poller = asyncio.ensure_future(parked.wait(30))
        outcomes = await settled(
            committer.submit(lambda: send(store, "e1")), committer.submit(commit_breaker(store, admin))
        )
        assert [type(o) for o in outcomes] == [errors.StoreUnavailable] * 2
        # The claim ran in the group and failed with it: its poller is woken, with no work (it is
        # to claim again itself), not failed.
        assert parked.woken
        assert await poller is True
        assert parked.handed() is None
    assert abandoned == []
    assert committed_event_ids(observer) == set()


# -- groups on the loop (PostgreSQL: Store.cooperative) ---------------------------------------------


@pytest.mark.postgres_only("only PostgreSQL's groups run on the loop in a greenlet and wait on a network")
async def test_a_lone_group_that_waits_for_a_lock_stops_blocking_the_loop_after_its_budget(
    store: SqlStore, committer: GroupCommitter, observer: Engine, admin: Engine
) -> None:
    """A lone group on an idle loop starts at once and may block the loop while it waits for the
    server, but only for ``BLOCKING_BUDGET_S``: one that waits longer (here, for the ingest lock that
    another session holds) goes on as a task, and the loop serves everything else meanwhile."""
    assert store.cooperative
    register(store)
    release = threading.Event()

    def hold_the_ingest_lock(held: threading.Event) -> None:
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": postgres.EVENTS_LOCK_KEY})
            held.set()
            release.wait(timeout=10)  # a loop blocked for good cannot set it: the test then fails
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": postgres.EVENTS_LOCK_KEY})

    held = threading.Event()
    holder = threading.Thread(target=hold_the_ingest_lock, args=(held,))
    holder.start()
    try:
        assert await asyncio.to_thread(held.wait, 10)
        await asyncio.sleep(2 * commits.IDLE_BEFORE_BLOCKING_S)  # the loop is idle: the group starts at once
        sent = committer.submit(lambda: send(store, "e-locked"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.sleep(0.05)
        served_after = loop.time() - started
        assert not sent.done(), "the group did not wait for the lock"
        # Blocked until the holder gives up (10 s), the sleep would have taken that long.
        assert served_after < 2.0, f"the loop was blocked for {served_after:.2f}s"
        release.set()
        result = await asyncio.wait_for(sent, timeout=30)
    finally:
        release.set()
        await asyncio.to_thread(holder.join, 30)
    assert len(result.run_ids) == 1
    assert committed_event_ids(observer) == {"e-locked"}
