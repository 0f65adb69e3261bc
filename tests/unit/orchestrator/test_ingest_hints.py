"""A lone event ingested on its name's hints (``store.ingest._ingest_on_hints``), on both databases.

Where the store pipelines (PostgreSQL), a lone event whose name was last seen with a known set of
functions and either no open waits, or waits on known match paths of known apps, is inserted with
its runs (and resolves the waits it matches) in one statement sent with the COMMIT, under guards
the database checks in the same transaction. What that must never change: an event starts a run of
exactly the functions its name triggers when it is received, a known id starts nothing and resumes
nothing, every open wait it matches is resumed exactly as a looked-up one would be, and the app of
every run it makes ready is announced. On SQLite (no hints) the same assertions hold by the usual
path."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from orchestrator.engine import matching
from orchestrator.engine.model import (
    Completion,
    FunctionSpec,
    IngestResult,
    NewEvent,
    RunState,
    StepStatus,
    WaitForEvent,
    WaitStatus,
)
from orchestrator.store import ingest
from orchestrator.store import schema as t
from orchestrator.store.sql import SqlStore
from tests.support.stores import seqscan_setting

T0 = 1_800_000_000_000
LEASE = 30_000
ORDERED = "shop/ordered"


@pytest.fixture(autouse=True)
def attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Yields how each attempt to ingest went (with no hints at the start: ``no_hints``): "hints"
    (sent on the hints), else "read" (looked up first). An attempt on a stale hint is rolled back
    and followed by a "read" one."""
    seen: list[str] = []
    plain_ingest, plain_on_hints = ingest.ingest, ingest._ingest_on_hints

    def on_hints(*args: Any, **kwargs: Any) -> Any:
        result = plain_on_hints(*args, **kwargs)
        if result is not None:
            seen[-1] = "hints"
        return result

    def noting(*args: Any) -> Any:
        seen.append("read")
        return plain_ingest(*args)

    monkeypatch.setattr(ingest, "_ingest_on_hints", on_hints)
    monkeypatch.setattr(ingest, "ingest", noting)
    yield seen


def expected(store: SqlStore, pipelined: str) -> list[str]:
    """The attempts (space-separated) where the store keeps hints; elsewhere (SQLite) one "read"
    attempt per event (a "read" right after "hints" is that event's second attempt)."""
    steps = pipelined.split()
    if store._dialect.pipelines:
        return steps
    retries = sum(1 for pair in zip(steps, steps[1:], strict=False) if pair == ("hints", "read"))
    return ["read"] * (len(steps) - retries)


def send(store: SqlStore, event_id: str, now: int = T0, data: dict[str, Any] | None = None) -> IngestResult:
    return store.ingest_events([NewEvent(ORDERED, json.dumps(data or {}), event_id)], now_ms=now)


def runs_of(observer: Engine, event_id: str) -> list[tuple[str, str, str, int]]:
    """(run id, app, function, retries) of the runs an event started."""
    r = t.runs
    query = select(r.c.id, r.c.app_id, r.c.function_id, r.c.retries).where(r.c.event_id == event_id)
    with observer.connect() as conn:
        return sorted((row.id, row.app_id, row.function_id, row.retries) for row in conn.execute(query))


def test_an_event_starts_the_functions_its_name_triggers_when_received_whatever_the_hint(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    store.register_functions("shop", [FunctionSpec("bill", (ORDERED,), 2)], now_ms=T0)
    first = send(store, "o1")  # learns the hint
    second = send(store, "o2")
    assert attempts == expected(store, "read hints")
    for result, event_id in ((first, "o1"), (second, "o2")):
        ((run_id, *rest),) = runs_of(observer, event_id)
        assert result.run_ids == (run_id,) and rest == ["shop", "bill", 2]
        assert result.wakeups.ready_apps == {"shop"}
    # Another function now triggered by the name (and new retries): the hint misses it.
    store.register_functions("audit", [FunctionSpec("log", (ORDERED, "other"), 0)], now_ms=T0)
    store.register_functions("shop", [FunctionSpec("bill", (ORDERED,), 5)], now_ms=T0)
    third = send(store, "o3")
    assert [row[1:] for row in runs_of(observer, "o3")] == [("audit", "log", 0), ("shop", "bill", 5)]
    assert sorted(third.run_ids) == [row[0] for row in runs_of(observer, "o3")]
    assert third.wakeups.ready_apps == {"audit", "shop"}
    # The name no longer triggers bill: the hint has one function too many.
    store.register_functions("shop", [FunctionSpec("bill", ("shop/paid",), 5)], now_ms=T0)
    fourth = send(store, "o4")
    ((run_id, *rest),) = runs_of(observer, "o4")
    assert fourth.run_ids == (run_id,) and rest == ["audit", "log", 0]
    # Triggering nothing at all is a hint too.
    store.register_functions("audit", [FunctionSpec("log", ("other",), 0)], now_ms=T0)
    assert send(store, "o5").run_ids == ()
    assert send(store, "o6").run_ids == () and runs_of(observer, "o6") == []
    # Each stale hint cost its event an attempt (o3, o4, o5), then the hint was right again.
    assert attempts == expected(store, "read hints hints read hints read hints read hints")


def test_a_known_id_on_hints_is_acknowledged_and_starts_nothing(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    store.register_functions("shop", [FunctionSpec("bill", (ORDERED,))], now_ms=T0)
    send(store, "o1")
    first = send(store, "o2")
    again = send(store, "o2", now=T0 + 5)
    assert again.ids == ("o2",) and again.run_ids == () and again.wakeups.ready_apps == frozenset()
    assert [row[0] for row in runs_of(observer, "o2")] == list(first.run_ids)
    with observer.connect() as conn:
        assert conn.execute(select(func.count()).where(t.events.c.id == "o2")).scalar() == 1
    # The repeat tried the hints, and was read after the guard refused it.
    assert attempts == expected(store, "read hints hints read")


def test_a_wait_opened_on_the_name_after_the_hint_is_resumed(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    store.register_functions("shop", [FunctionSpec("bill", (ORDERED,))], now_ms=T0)
    send(store, "o1")  # the name: one function, no open wait
    store.register_functions("ship", [FunctionSpec("pack", ("ship/start",))], now_ms=T0)
    store.ingest_events([NewEvent("ship/start", json.dumps({"order": 7}), "s1")], now_ms=T0)
    (item,) = store.claim_work(
        app_id="ship", function_ids=(), worker_id="w", max_items=1, now_ms=T0, lease_ms=LEASE
    ).items
    wait = WaitForEvent(ORDERED, "data.order", T0 + 60_000)
    store.complete_step(Completion(item.run_id, item.lease_id, "paid", wait), now_ms=T0, lease_ms=LEASE)

    result = send(store, "o2", now=T0 + 5, data={"order": 7})
    assert [e.run_id for e in result.ended] == [item.run_id]
    assert result.wakeups.ready_apps == {"shop", "ship"}
    assert len(runs_of(observer, "o2")) == 1
    with observer.connect() as conn:
        step = conn.execute(
            select(t.steps.c.status).where(t.steps.c.run_id == item.run_id, t.steps.c.step_id == "paid")
        ).scalar()
    assert step == StepStatus.COMPLETED
    # o1 read, s1 read (a new name); o2 tried the hints, the guard saw the wait, o2 was read.
    assert attempts == expected(store, "read read hints read")


@pytest.mark.postgres_only("only a pipelining store acts on hints")
def test_an_event_on_hints_over_a_connection_the_server_closed_while_idle_is_not_failed(
    store: SqlStore, admin: Engine, attempts: list[str]
) -> None:
    # On hints, the event's only round trip carries its COMMIT: a connection that broke under it
    # could only be reported as an unknown outcome. One the server closed while it sat idle (a
    # restart, a terminated session), kept by the store between write transactions or in the pool,
    # is replaced before the transaction starts instead.
    store.register_functions("shop", [FunctionSpec("bill", (ORDERED,))], now_ms=T0)
    send(store, "o1")
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with admin.connect() as conn:
        pids = list(conn.exec_driver_sql(f"SELECT pid {others}").scalars())
        assert pids  # the store's connection, kept idle since o1
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) {others}")
        deadline = time.monotonic() + 30
        while conn.exec_driver_sql(f"SELECT count(*) {others}").scalar_one():
            assert time.monotonic() < deadline, "the terminated sessions did not end"
            time.sleep(0.01)

    result = send(store, "o2")
    assert attempts[-1] == "hints"
    assert [row[0] for row in runs_of(admin, "o2")] == list(result.run_ids) and len(result.run_ids) == 1


_PARKED = itertools.count()


def park(store: SqlStore, app: str, order: object, path: str = "data.order", now: int = T0) -> str:
    """A run of ``app`` parked in a wait for ORDERED whose ``path`` equals ``order`` (the value its
    triggering event has there); its id. (A function of its own, so that it claims that run.)"""
    n = next(_PARKED)
    start, fn = f"{app}/start{n}", f"pack{n}"
    data = {path.removeprefix("data."): order} if path else {}
    store.register_functions(app, [FunctionSpec(fn, (start,))], now_ms=now)
    store.ingest_events([NewEvent(start, json.dumps(data), f"{app}-{n}")], now_ms=now)
    (item,) = store.claim_work(
        app_id=app, function_ids=(fn,), worker_id="w", max_items=1, now_ms=now, lease_ms=LEASE
    ).items
    wait = WaitForEvent(ORDERED, path, now + 60_000)
    store.complete_step(Completion(item.run_id, item.lease_id, "paid", wait), now_ms=now, lease_ms=LEASE)
    return item.run_id


def learned(store: SqlStore, attempts: list[str]) -> None:
    """The name's hints learnt by a looked-up event ("o1", order 7) that resumes a run of "ship";
    another of its runs keeps the path open (order 100). ``attempts`` starts after that event."""
    park(store, "ship", 7)
    park(store, "ship", 100)
    send(store, "o1", data={"order": 7})
    attempts.clear()


def wait_state(observer: Engine, run_id: str) -> dict[str, Any]:
    """What resolving a run's wait ("paid") writes: the wait, its step and the run."""
    w, s_, r = t.waits, t.steps, t.runs
    with observer.connect() as conn:
        wait = conn.execute(
            select(w.c.status, w.c.resolved_event_id, w.c.resolved_ms).where(w.c.run_id == run_id)
        ).one()
        step = conn.execute(
            select(s_.c.status, s_.c.output, s_.c.ended_ms, s_.c.resumed_by_event_id)
            .where(s_.c.run_id == run_id, s_.c.step_id == "paid")
        ).one()
        run = conn.execute(
            select(r.c.state, r.c.available_at_ms, r.c.event_mark).where(r.c.id == run_id)
        ).one()
        seq = {row.id: row.seq for row in conn.execute(select(t.events.c.id, t.events.c.seq))}
    return {
        "wait": tuple(wait), "step": tuple(step), "state": run.state, "available_at_ms": run.available_at_ms,
        "event_mark_of": next((i for i, n in seq.items() if n == run.event_mark), None),
    }


def resumed_by(event_id: str, data: dict[str, Any], now: int) -> dict[str, Any]:
    """``wait_state`` of a run whose wait ``event_id`` resumed at ``now``."""
    output = matching.event_output_json(event_id, ORDERED, json.dumps(data), now)
    return {
        "wait": (WaitStatus.MATCHED, event_id, now),
        "step": (StepStatus.COMPLETED, output, now, event_id),
        "state": RunState.READY, "available_at_ms": now, "event_mark_of": event_id,
    }


def test_an_event_on_hints_resumes_the_waits_it_matches_as_a_lookup_would(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    store.register_functions("shop", [FunctionSpec("bill", (ORDERED,))], now_ms=T0)
    first, second, third, still = (park(store, "ship", order) for order in (7, 8, 8, 100))
    attempts.clear()  # (the parked runs' own events were read)
    looked_up = send(store, "o1", now=T0 + 1, data={"order": 7})  # learns paths, functions, apps
    on_hints = send(store, "o2", now=T0 + 2, data={"order": 8})
    assert [e.run_id for e in looked_up.ended] == [first]
    assert sorted(e.run_id for e in on_hints.ended) == sorted([second, third])
    assert wait_state(observer, first) == resumed_by("o1", {"order": 7}, T0 + 1)
    for run_id in (second, third):
        assert wait_state(observer, run_id) == resumed_by("o2", {"order": 8}, T0 + 2)
    assert looked_up.wakeups.ready_apps == on_hints.wakeups.ready_apps == {"shop", "ship"}
    assert [row[0] for row in runs_of(observer, "o2")] == list(on_hints.run_ids)
    assert len(on_hints.run_ids) == 1

    # No open wait matches: nothing resumed (the hinted app is announced: its pollers find nothing).
    unmatched = send(store, "o3", now=T0 + 3, data={"order": 9})
    assert unmatched.ended == [] and len(unmatched.run_ids) == 1
    # No value at the waited path: nothing can match, only the started run's app is announced.
    no_value = send(store, "o4", now=T0 + 4, data={})
    assert no_value.ended == [] and no_value.wakeups.ready_apps == {"shop"}
    assert wait_state(observer, still)["wait"] == (WaitStatus.WAITING, None, None)
    assert attempts == expected(store, "read hints hints hints")


def test_a_known_id_on_hints_resumes_no_wait(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    first, second = park(store, "ship", 7), park(store, "ship", 8)
    attempts.clear()
    send(store, "o1", data={"order": 7})
    again = send(store, "o1", now=T0 + 5, data={"order": 8})  # the same id, other data
    assert again.ids == ("o1",) and not again.ended and again.run_ids == ()
    assert wait_state(observer, second)["wait"] == (WaitStatus.WAITING, None, None)
    assert wait_state(observer, first) == resumed_by("o1", {"order": 7}, T0)
    assert attempts == expected(store, "read hints read")


def test_a_wait_of_an_app_not_seen_on_the_name_refuses_the_hints_and_is_resumed(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    # The hint's apps are those whose waits the name's events resumed: a poller of another app
    # would not be handed its run, so the guard refuses and the event is read.
    learned(store, attempts)
    crm = park(store, "crm", 8)
    attempts.clear()  # (its own event)
    result = send(store, "o2", now=T0 + 5, data={"order": 8})
    assert [e.run_id for e in result.ended] == [crm] and result.wakeups.ready_apps == {"crm"}
    assert wait_state(observer, crm) == resumed_by("o2", {"order": 8}, T0 + 5)
    assert attempts == expected(store, "hints read")


def test_a_wait_on_a_path_not_seen_on_the_name_refuses_the_hints_and_is_resumed(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    learned(store, attempts)  # the name: waits on data.order
    by_customer = park(store, "ship", "ann", path="data.customer")
    attempts.clear()
    result = send(store, "o2", now=T0 + 5, data={"order": 9, "customer": "ann"})
    assert [e.run_id for e in result.ended] == [by_customer]
    assert wait_state(observer, by_customer) == resumed_by("o2", {"order": 9, "customer": "ann"}, T0 + 5)
    # A hinted path no wait is open on any more refuses too (its events would look in vain).
    send(store, "o3", now=T0 + 6, data={"order": 100})  # the last wait on data.order
    assert send(store, "o4", now=T0 + 7, data={"order": 1}).ended == []
    assert attempts == expected(store, "hints read hints read hints read")


def test_an_event_with_values_on_several_waited_paths_is_read_and_resumes_each(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    # The statement on hints takes one path; an event that may match waits on two is read.
    by_order, by_customer = park(store, "ship", 7), park(store, "ship", "ann", path="data.customer")
    park(store, "ship", 100)
    park(store, "ship", "bob", path="data.customer")
    attempts.clear()
    send(store, "o1", data={"order": 7})  # learns both paths
    both = send(store, "o2", now=T0 + 5, data={"order": 8, "customer": "ann"})
    assert [e.run_id for e in both.ended] == [by_customer]
    assert wait_state(observer, by_customer) == resumed_by("o2", {"order": 8, "customer": "ann"}, T0 + 5)
    assert wait_state(observer, by_order) == resumed_by("o1", {"order": 7}, T0)
    assert attempts == expected(store, "read read")


def test_on_hints_a_wait_is_matched_by_its_value_not_only_its_hash(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    # The hash narrows the lookup; the value decides. A wait whose stored value differs but whose
    # hash is the event's (forged here: a collision) is left waiting.
    learned(store, attempts)
    forged = park(store, "ship", 8)
    with observer.begin() as conn:
        conn.execute(t.waits.update().where(t.waits.c.run_id == forged).values(match_value='"eight"'))
    attempts.clear()
    assert send(store, "o2", now=T0 + 5, data={"order": 8}).ended == []
    assert wait_state(observer, forged)["wait"] == (WaitStatus.WAITING, None, None)
    assert attempts == expected(store, "hints")


def test_on_hints_a_wait_without_a_match_path_is_resumed_by_any_event_of_its_name(
    store: SqlStore, observer: Engine, attempts: list[str]
) -> None:
    first, second = park(store, "ship", None, path=""), park(store, "ship", None, path="")
    attempts.clear()
    send(store, "o1", data={"order": 1})  # resumes both
    third = park(store, "ship", None, path="")
    park(store, "ship", None, path="")
    del attempts[-2:]
    result = send(store, "o2", now=T0 + 5, data={})
    assert len(result.ended) == 2 and third in {e.run_id for e in result.ended}
    assert wait_state(observer, first) == resumed_by("o1", {"order": 1}, T0)
    assert wait_state(observer, second) == resumed_by("o1", {"order": 1}, T0)
    assert wait_state(observer, third) == resumed_by("o2", {}, T0 + 5)
    assert attempts == expected(store, "read hints")


@pytest.mark.postgres_only("the planner's setting is PostgreSQL's")
def test_an_event_resuming_waits_on_hints_plans_the_rest_of_its_transaction_by_the_indexes(
    store: SqlStore, attempts: list[str]
) -> None:
    # (Why: ``ingest._RESUME_ON_HINTS``; test_pg_generic_plans checks its plan with the setting.)
    store.register_functions("shop", [FunctionSpec("bill", (ORDERED,))], now_ms=T0)
    park(store, "ship", 7)
    park(store, "ship", 8)
    send(store, "o1", now=T0 + 1, data={"order": 7})  # learns the hints
    attempts.clear()
    with store.grouped():
        resumed = send(store, "o2", now=T0 + 2, data={"order": 8})
        inside = seqscan_setting(store)
    assert (inside, attempts, len(resumed.ended)) == ("off", ["hints"], 1)
    assert seqscan_setting(store) == "on"
