"""A parked poller's claim that commits with the event starting its run (the handoff), where the
event is ingested on its name's hints (PostgreSQL): the run is inserted leased to the poller
(``txn.UnsentRuns``) rather than inserted ready and then updated by the claim's statement.

What it must never change, checked on both stores: the poller gets the run with the lease the
database holds, its event and attempt as a claim would give them; the oldest ready run of the app
still goes first; a claim of other functions, or a second claim in the same group, never takes the
run; and a stale hint (the guard refusing the statement) still ends with the run claimed once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from orchestrator.config import Settings
from orchestrator.engine.model import (
    Completion,
    FunctionSpec,
    NewEvent,
    RunState,
    SendEvents,
    StepOutput,
    WaitForEvent,
    WorkItem,
)
from orchestrator.service import Orchestrator
from orchestrator.store import leases
from orchestrator.store import schema as t
from orchestrator.store.sql import SqlStore
from tests.support.stores import run_row
from tests.support.waiting import wait_until_async

T0 = 1_800_000_000_000
LEASE = 300_000
GO = "shop/ordered"


@pytest.fixture
def sent(store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL of every statement the store sends through its pipelines (PostgreSQL; none on SQLite)."""
    texts: list[str] = []
    dialect = store._dialect
    plain = dialect.pipeline

    def recording(raw: Any, statements: Any) -> Any:
        texts.extend(sql for sql, _ in statements)
        return plain(raw, statements)

    monkeypatch.setattr(dialect, "pipeline", recording)
    yield texts


def claims_sent(texts: list[str]) -> int:
    return sum(1 for sql in texts if sql is not None and "WITH chosen AS" in sql)


def learn_hints(store: SqlStore) -> None:
    """Registers app "shop" (bill and ship, on GO and on "other"), and sends a first GO event, whose
    run is claimed: the next GO event of this process goes on the name's hints (PostgreSQL)."""
    store.register_functions(
        "shop", [FunctionSpec("bill", (GO,)), FunctionSpec("ship", ("other",))], now_ms=T0
    )
    store.ingest_events([NewEvent(GO, "{}")], now_ms=T0)
    assert len(claim(store, "w0", max_items=10)) == 1


def claim(
    store: SqlStore, worker: str, *, max_items: int = 1, functions: tuple[str, ...] = (), now: int = T0
) -> tuple[WorkItem, ...]:
    return store.claim_work(
        app_id="shop",
        function_ids=functions,
        worker_id=worker,
        max_items=max_items,
        now_ms=now,
        lease_ms=LEASE,
    ).items


def event_and_claims(
    store: SqlStore,
    event_id: str,
    *,
    functions: tuple[str, ...] = (),
    max_items: int = 5,
    after: bool = False,
) -> tuple[tuple[str, ...], tuple[WorkItem, ...]]:
    """One group: a GO event, then a claim of app "shop" by "w1" (the group's last call, unless
    ``after``: then a registration follows it); the event's runs and the claim's items."""
    with store.grouped():
        store.next_call_is_last(False)
        run_ids = store.ingest_events([NewEvent(GO, json.dumps({"n": 7}), event_id)], now_ms=T0).run_ids
        store.next_call_is_last(not after)
        items = claim(store, "w1", max_items=max_items, functions=functions)
        if after:
            store.next_call_is_last(True)
            store.register_functions("crm", [FunctionSpec("sync", ("crm/x",))], now_ms=T0)
    return run_ids, items


def event_and_claim(
    store: SqlStore, event_id: str, *, functions: tuple[str, ...] = (), after: bool = False
) -> tuple[str, tuple[WorkItem, ...]]:
    """``event_and_claims`` of an event that starts one run."""
    (run_id,), items = event_and_claims(store, event_id, functions=functions, after=after)
    return run_id, items


@pytest.mark.parametrize("after", [False, True], ids=["claim-last", "a-call-after"])
def test_a_claim_with_the_event_gets_its_run_as_a_claim_would_and_leased_in_the_database(
    store: SqlStore, observer: Engine, sent: list[str], after: bool
) -> None:
    learn_hints(store)
    sent.clear()
    run_id, items = event_and_claim(store, "e1", after=after)
    (item,) = items
    assert (item.run_id, item.app_id, item.function_id, item.attempt, item.steps) == (
        run_id,
        "shop",
        "bill",
        0,
        (),
    )
    assert (item.event.id, item.event.name, json.loads(item.event.data_json), item.event.ts_ms) == (
        "e1",
        GO,
        {"n": 7},
        T0,
    )
    row = run_row(observer, run_id)
    assert (row.state, row.worker_id, row.lease_id, row.lease_expires_ms) == (
        RunState.LEASED,
        "w1",
        item.lease_id,
        T0 + LEASE,
    )
    assert item.event.seq == row.event_seq and item.lease_expires_ms == T0 + LEASE
    # Where the store pipelines, the run was inserted leased: no claim statement was sent.
    assert claims_sent(sent) == (0 if store._dialect.pipelines else claims_sent(sent))
    if store._dialect.pipelines:
        assert sent, "the group sent nothing through the pipeline"
    # Nothing else is claimable, and the registration after the claim committed too.
    assert claim(store, "w2", max_items=10) == ()
    if after:
        with observer.connect() as conn:
            assert conn.execute(select(t.functions.c.function_id).where(t.functions.c.app_id == "crm")).all()


def test_the_oldest_ready_run_of_the_app_still_goes_first(store: SqlStore, observer: Engine) -> None:
    learn_hints(store)
    (older,) = store.ingest_events([NewEvent(GO, "{}", "e0")], now_ms=T0).run_ids
    younger, items = event_and_claim(store, "e1")
    # The group's claim takes both, the older first (SQLite), or, where the younger one's insert
    # checked for an older ready run and found one, nothing (PostgreSQL: the poller claims again).
    assert [item.run_id for item in items] in ([older, younger], [])
    taken = [item.run_id for item in items]
    while more := claim(store, "w2"):
        taken += [item.run_id for item in more]
    assert taken == [older, younger]
    assert run_row(observer, younger).worker_id == ("w1" if len(items) == 2 else "w2")


def test_a_claim_after_two_events_takes_both_runs_oldest_first(store: SqlStore, observer: Engine) -> None:
    # Only the first ingest of a transaction may have its runs inserted leased: a claim after two
    # takes both by its statement (as many as it may), not the first one's alone.
    learn_hints(store)
    with store.grouped():
        store.next_call_is_last(False)
        (first,) = store.ingest_events([NewEvent(GO, "{}", "e1")], now_ms=T0).run_ids
        (second,) = store.ingest_events([NewEvent(GO, "{}", "e2")], now_ms=T0 + 1).run_ids
        store.next_call_is_last(True)
        items = claim(store, "w1", max_items=5, now=T0 + 1)
    assert [item.run_id for item in items] == [first, second]
    assert {run_row(observer, run_id).worker_id for run_id in (first, second)} == {"w1"}


def test_a_claim_of_other_functions_leaves_the_run_ready(store: SqlStore, observer: Engine) -> None:
    learn_hints(store)
    run_id, items = event_and_claim(store, "e1", functions=("ship",))
    assert items == ()
    assert run_row(observer, run_id).state == RunState.READY
    (item,) = claim(store, "w2", functions=("bill",))
    assert item.run_id == run_id and run_row(observer, run_id).worker_id == "w2"


def test_an_older_ready_run_of_a_function_the_claim_does_not_take_holds_nothing_back(
    store: SqlStore, observer: Engine
) -> None:
    # (From a review: the older run test first ignored the claim's functions, so a poller of bill
    # came back empty, and claimed again, for every event while a ship run waited for its workers.)
    learn_hints(store)
    (ship,) = store.ingest_events([NewEvent("other", "{}", "x0")], now_ms=T0 - 5).run_ids
    run_id, items = event_and_claim(store, "e1", functions=("bill",))
    assert [item.run_id for item in items] == [run_id]
    assert run_row(observer, ship).state == RunState.READY


def test_a_claim_deciding_before_the_runs_ready_time_does_not_take_them(
    store: SqlStore, observer: Engine
) -> None:
    learn_hints(store)
    with store.grouped():
        store.next_call_is_last(False)
        (run_id,) = store.ingest_events([NewEvent(GO, "{}", "e1")], now_ms=T0 + 10_000).run_ids
        store.next_call_is_last(True)
        assert claim(store, "w1", now=T0) == ()
    assert run_row(observer, run_id).state == RunState.READY


def test_a_second_claim_in_the_group_does_not_take_the_run(store: SqlStore, observer: Engine) -> None:
    learn_hints(store)
    with store.grouped():
        store.next_call_is_last(False)
        (run_id,) = store.ingest_events([NewEvent(GO, "{}", "e1")], now_ms=T0).run_ids
        first = claim(store, "w1")
        store.next_call_is_last(True)
        second = claim(store, "w2")
    assert [item.run_id for item in first] == [run_id] and second == ()
    assert run_row(observer, run_id).worker_id == "w1"


def test_a_run_inserted_leased_is_found_by_its_lease_as_one_claimed(
    store: SqlStore, observer: Engine
) -> None:
    # What a worker does next with it: the lease extends and the run can be handed back.
    learn_hints(store)
    run_id, (item,) = event_and_claim(store, "e1")
    assert store.extend_lease(run_id, item.lease_id, now_ms=T0 + 1, lease_ms=LEASE) == T0 + 1 + LEASE
    store.release_work(run_id, item.lease_id, now_ms=T0 + 2)
    (again,) = claim(store, "w2", now=T0 + 2)
    assert again.run_id == run_id and run_row(observer, run_id).worker_id == "w2"


def test_a_claim_not_last_whose_lease_was_refused_takes_the_oldest_by_its_statement(
    store: SqlStore, observer: Engine
) -> None:
    # The probe finds an older ready run; the claim does not carry the COMMIT: its statement then
    # takes both, oldest first. (This test and the three below are from a second review.)
    learn_hints(store)
    (older,) = store.ingest_events([NewEvent(GO, "{}", "e0")], now_ms=T0).run_ids
    younger, items = event_and_claim(store, "e1", after=True)
    assert [item.run_id for item in items] == [older, younger]
    assert run_row(observer, younger).worker_id == "w1"
    assert run_row(observer, older).worker_id == "w1"


def test_a_claim_takes_no_more_of_the_events_runs_than_its_max_items(
    store: SqlStore, observer: Engine, sent: list[str]
) -> None:
    store.register_functions(
        "shop",
        [FunctionSpec("bill", (GO,)), FunctionSpec("pack", (GO,)), FunctionSpec("ship", ("other",))],
        now_ms=T0,
    )
    store.ingest_events([NewEvent(GO, "{}")], now_ms=T0)
    assert len(claim(store, "w0", max_items=10)) == 2
    sent.clear()
    run_ids, items = event_and_claims(store, "e1", max_items=1)
    assert len(run_ids) == 2
    (item,) = items
    rows = {run_id: run_row(observer, run_id) for run_id in run_ids}
    assert rows[item.run_id].state == RunState.LEASED and rows[item.run_id].lease_id == item.lease_id
    (other,) = set(run_ids) - {item.run_id}
    assert rows[other].state == RunState.READY and rows[other].lease_id is None
    if store._dialect.pipelines:
        assert claims_sent(sent) == 0
    (again,) = claim(store, "w2", max_items=5)
    assert again.run_id == other


def test_a_claim_takes_the_runs_of_its_app_only_and_another_apps_older_run_holds_nothing_back(
    store: SqlStore, observer: Engine, sent: list[str]
) -> None:
    store.register_functions("shop", [FunctionSpec("bill", (GO,))], now_ms=T0)
    store.register_functions("crm", [FunctionSpec("sync", (GO,))], now_ms=T0)
    # an older ready run of another app must not hold the lease back
    store.register_functions("crm2", [FunctionSpec("x", ("crm/x",))], now_ms=T0)
    store.ingest_events([NewEvent(GO, "{}")], now_ms=T0)
    assert len(claim(store, "w0", max_items=10)) == 1
    store.ingest_events([NewEvent("crm/x", "{}")], now_ms=T0 - 50)
    sent.clear()
    run_ids, (item,) = event_and_claims(store, "e1")
    assert item.app_id == "shop"
    by_app = {run_row(observer, r).app_id: run_row(observer, r) for r in run_ids}
    assert by_app["shop"].state == RunState.LEASED and by_app["crm"].state == RunState.READY
    if store._dialect.pipelines:
        assert claims_sent(sent) == 0


def test_an_event_sent_by_a_step_then_a_claim_gets_its_run_leased_at_insert(
    store: SqlStore, observer: Engine, sent: list[str]
) -> None:
    store.register_functions(
        "shop", [FunctionSpec("bill", (GO,)), FunctionSpec("sender", ("start",))], now_ms=T0
    )
    store.ingest_events([NewEvent("start", "{}"), NewEvent("start", "{}")], now_ms=T0)
    senders = claim(store, "w0", max_items=2, functions=("sender",))
    assert len(senders) == 2
    # first send learns the hints
    c = Completion(senders[0].run_id, senders[0].lease_id, "s", SendEvents((NewEvent(GO, "{}"),)))
    store.complete_step(c, now_ms=T0, lease_ms=LEASE)
    assert len(claim(store, "w0", max_items=5, functions=("bill",))) == 1
    sent.clear()
    with store.grouped():
        store.next_call_is_last(False)
        c = Completion(
            senders[1].run_id, senders[1].lease_id, "s", SendEvents((NewEvent(GO, '{"a": 1}', "e9"),))
        )
        result = store.complete_step(c, now_ms=T0, lease_ms=LEASE)
        store.next_call_is_last(True)
        items = claim(store, "w1", max_items=5, functions=("bill",))
    (item,) = items
    assert json.loads(result.output_json) == ["e9"]
    row = run_row(observer, item.run_id)
    assert (row.state, row.lease_id, row.event_id) == (RunState.LEASED, item.lease_id, "e9")
    assert item.event.seq == row.event_seq and item.event.id == "e9"
    if store._dialect.pipelines:
        assert claims_sent(sent) == 0


# An event that resumes waits as well: its runs are claimed by the claim's statement.

PAID = "shop/paid"
DAY_MS = 86_400_000


def park(store: SqlStore, keys: list[str]) -> dict[str, str]:
    """A run of "waiter" per key, one step done, then waiting for PAID with data.k equal to its own
    event's; returns the run ids by key."""
    store.register_functions("shop", [FunctionSpec("waiter", ("shop/start",))], now_ms=T0)
    events = [NewEvent("shop/start", json.dumps({"k": k}), f"start-{k}") for k in keys]
    store.ingest_events(events, now_ms=T0)
    runs: dict[str, str] = {}
    for item in claim(store, "w0", max_items=len(keys)):
        runs[json.loads(item.event.data_json)["k"]] = item.run_id
        wait = WaitForEvent(PAID, "data.k", T0 + DAY_MS)
        for step_id, outcome in (("s1", StepOutput('"one"')), ("w", wait)):
            completion = Completion(item.run_id, item.lease_id, step_id, outcome)
            store.complete_step(completion, now_ms=T0, lease_ms=LEASE)
    assert sorted(runs) == sorted(keys)
    return runs


def paid(key: str, event_id: str) -> NewEvent:
    return NewEvent(PAID, json.dumps({"k": key, "amount": 3}), event_id)


def test_an_event_that_starts_a_run_and_resumes_one_hands_both_to_the_claim(
    store: SqlStore, observer: Engine
) -> None:
    # Its statement leases none: the claim's statement takes both, as many as it may. (From a
    # review: leasing the started run alone left the resumed one ready.)
    runs = park(store, ["k0", "k1"])
    store.register_functions(
        "shop", [FunctionSpec("waiter", ("shop/start",)), FunctionSpec("bill", (PAID,))], now_ms=T0
    )
    store.ingest_events([paid("k0", "p0")], now_ms=T0)  # learns the hints
    assert len(claim(store, "w0", max_items=5)) == 2
    with store.grouped():
        store.next_call_is_last(False)
        (started,) = store.ingest_events([paid("k1", "p1")], now_ms=T0).run_ids
        store.next_call_is_last(True)
        items = claim(store, "w1", max_items=5)
    assert sorted(item.run_id for item in items) == sorted([started, runs["k1"]])


# Through the facade: the handoff of a parked poller, and a stale hint.


@pytest.fixture
async def orch(store: SqlStore) -> AsyncIterator[Orchestrator]:
    service = Orchestrator(store, Settings(db_url=store.url, lease_seconds=LEASE / 1000))
    await service.register_functions("shop", [FunctionSpec("bill", (GO,))])
    try:
        yield service
    finally:
        service.begin_shutdown()
        await service.close()


def poll(orch: Orchestrator, worker: str) -> asyncio.Future[tuple[WorkItem, ...]]:
    return asyncio.ensure_future(
        orch.poll_work(
            app_id="shop", function_ids=(), worker_id=worker, max_items=1, max_wait=timedelta(seconds=30)
        )
    )


async def until_parked(orch: Orchestrator) -> None:
    def parked() -> bool:
        return any(sub.handoff is not None for sub in orch.signals._subs.get("shop", {}))

    await wait_until_async(parked, timeout=20, message="a poller parked")


async def test_a_parked_poller_gets_the_run_of_an_event_on_hints_in_the_events_commit(
    orch: Orchestrator, observer: Engine, sent: list[str]
) -> None:
    first = poll(orch, "w0")
    await until_parked(orch)
    await orch.send_events([NewEvent(GO)])  # learns the hints
    await first
    poller = poll(orch, "w1")
    await until_parked(orch)
    sent.clear()
    (run_id,) = (await orch.send_events([NewEvent(GO)])).run_ids
    assert poller.done()  # committed with the event: its sender hears of it after the poller
    (item,) = poller.result()
    row = run_row(observer, run_id)
    assert (item.run_id, row.state, row.worker_id, row.lease_id) == (
        run_id,
        RunState.LEASED,
        "w1",
        item.lease_id,
    )
    assert claims_sent(sent) == 0


async def test_a_stale_hint_refused_with_a_handoff_still_hands_the_run_once(
    orch: Orchestrator, store: SqlStore, observer: Engine
) -> None:
    first = poll(orch, "w0")
    await until_parked(orch)
    await orch.send_events([NewEvent(GO)])  # learns the hints: GO starts bill
    await first
    # GO now starts pack too: the hint is stale, so the statement's guard refuses it, the group
    # rolls back and each call runs again alone (the poller's claim after the event's).
    await orch.register_functions("shop", [FunctionSpec("bill", (GO,)), FunctionSpec("pack", (GO,))])
    poller = poll(orch, "w1")
    await until_parked(orch)
    run_ids = (await orch.send_events([NewEvent(GO)])).run_ids
    (item,) = await asyncio.wait_for(poller, timeout=20)
    assert len(run_ids) == 2 and item.run_id in run_ids
    states = sorted(run_row(observer, run_id).state for run_id in run_ids)
    assert states == sorted([RunState.LEASED, RunState.READY])
    assert run_row(observer, item.run_id).lease_id == item.lease_id


def test_the_claim_statement_is_what_leases_otherwise(store: SqlStore, sent: list[str]) -> None:
    # (The counter above counts the claim statement where it is sent: an event not on hints.)
    store.register_functions("shop", [FunctionSpec("bill", (GO,))], now_ms=T0)
    with store.grouped():
        store.next_call_is_last(False)
        store.ingest_events([NewEvent(GO, "{}")], now_ms=T0)
        store.next_call_is_last(True)
        assert len(claim(store, "w1")) == 1
    assert claims_sent(sent) == (1 if store._dialect.pipelines else 0)
    assert "WITH chosen AS" in leases._LEASE_READY.statement.text  # type: ignore[attr-defined]
