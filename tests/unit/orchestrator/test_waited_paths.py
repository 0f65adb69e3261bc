"""The match paths waited on under an event name (``store.names.WAITED_PATHS``, a recursive-CTE
loose index scan: one seek per distinct path), and the event ingest built on it, on both databases.

The scan must return each path with an open wait exactly once however many runs wait on it, never
a path whose waits are all closed (matched, timed out, cancelled), never another name's paths."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, func, select

from orchestrator.engine.model import (
    Completion,
    FunctionSpec,
    NewEvent,
    StepStatus,
    WaitForEvent,
    WaitStatus,
    WorkItem,
)
from orchestrator.store import ingest, names
from orchestrator.store import schema as t
from orchestrator.store.sql import SqlStore

T0 = 1_800_000_000_000
LEASE = 30_000
DAY = 86_400_000
UPLOADED, REVIEWED, OTHER = "api/uploaded", "api/reviewed", "api/other"


def waiting_runs(
    store: SqlStore, waits: list[tuple[str, str, object]], *, timeout: int = T0 + DAY, now: int = T0
) -> list[WorkItem]:
    """One run per (event name, match path, value): its trigger carries ``value`` at the path's
    place (``data.<key>``), and it waits on that name and path. Returns the runs as claimed. Each
    call starts its runs in an app of its own (``crm-<now>``), so it claims only those."""
    app, trigger = f"crm-{now}", f"{UPLOADED}.{now}"
    store.register_functions(app, [FunctionSpec("import", (trigger,))], now_ms=now)
    triggers = []
    for i, (_, path, value) in enumerate(waits):
        data = {path.removeprefix("data."): value} if path else {}
        triggers.append(NewEvent(trigger, json.dumps(data), f"up-{now}-{i}"))
    store.ingest_events(triggers, now_ms=now)
    items = store.claim_work(
        app_id=app, function_ids=(), worker_id="w", max_items=len(waits), now_ms=now, lease_ms=LEASE
    ).items
    by_trigger = {item.event.id: item for item in items}
    ordered = [by_trigger[e.id or ""] for e in triggers]
    for item, (name, path, _) in zip(ordered, waits, strict=True):
        store.complete_step(
            Completion(item.run_id, item.lease_id, "wait", WaitForEvent(name, path, timeout)),
            now_ms=now,
            lease_ms=LEASE,
        )
    return ordered


def waited_paths(store: SqlStore, name: str) -> list[str]:
    return store._run(lambda tx: names.WAITED_PATHS.run(tx, name=name).scalars())


def open_waits(observer: Engine, name: str) -> int:
    w = t.waits
    query = select(func.count()).where(w.c.event_name == name, w.c.status == WaitStatus.WAITING)
    with observer.connect() as conn:
        return int(conn.execute(query).scalar_one())


def wait_status(store: SqlStore, item: WorkItem) -> StepStatus:
    (step,) = store.get_run(item.run_id).steps
    return step.status


def test_each_open_match_path_is_found_once_however_many_runs_wait_on_it(
    store: SqlStore, observer: Engine
) -> None:
    # Closed waits first (an event that matched one would also resume the open "" waits below).
    cancelled, matched, timed_out, cancelled_b = waiting_runs(
        store,
        [
            (REVIEWED, "data.closed", "c1"),
            (REVIEWED, "data.closed", "c2"),
            (REVIEWED, "data.closed", "c3"),
            (REVIEWED, "data.b", "b-closed"),
        ],
        timeout=T0 + 1_000,
    )
    store.cancel_run(cancelled.run_id, now_ms=T0 + 1)
    store.cancel_run(cancelled_b.run_id, now_ms=T0 + 1)
    store.ingest_events([NewEvent(REVIEWED, json.dumps({"closed": "c2"}))], now_ms=T0 + 2)
    assert store.fire_due_timers(now_ms=T0 + 1_000, since_ms=T0).wakeups.ready_apps == {f"crm-{T0}"}
    assert [wait_status(store, i) for i in (matched, timed_out)] == [StepStatus.COMPLETED] * 2
    assert waited_paths(store, REVIEWED) == []

    waiting_runs(
        store,
        [(REVIEWED, "data.a", f"a{i % 3}") for i in range(6)]
        + [(REVIEWED, "data.b", f"b{i}") for i in range(4)]
        + [(REVIEWED, "", None) for _ in range(3)]
        + [(OTHER, "data.c", "c") for _ in range(2)],
        now=T0 + 2_000,
    )
    assert open_waits(observer, REVIEWED) == 13
    assert waited_paths(store, REVIEWED) == ["", "data.a", "data.b"]
    assert waited_paths(store, OTHER) == ["data.c"]
    assert waited_paths(store, "nobody/waits") == []


def test_an_event_resumes_the_waits_of_every_path_it_matches_and_no_other(store: SqlStore) -> None:
    on_a, on_b, on_any, other_a, missing = waiting_runs(
        store,
        [
            (REVIEWED, "data.a", 1),
            (REVIEWED, "data.b", 2),
            (REVIEWED, "", None),
            (REVIEWED, "data.a", 9),
            (REVIEWED, "data.missing", "m"),
        ],
    )
    result = store.ingest_events([NewEvent(REVIEWED, json.dumps({"a": 1, "b": 2}), "rev")], now_ms=T0 + 5)
    assert result.wakeups.ready_apps == {f"crm-{T0}"}
    resumed = {i.run_id for i in (on_a, on_b, on_any)}
    for item in (on_a, on_b, on_any, other_a, missing):
        expected = StepStatus.COMPLETED if item.run_id in resumed else StepStatus.WAITING
        assert wait_status(store, item) == expected, item
    assert waited_paths(store, REVIEWED) == ["data.a", "data.missing"]


def test_paths_hinted_by_earlier_events_change_nothing_an_event_resumes(store: SqlStore) -> None:
    # Where the store pipelines (PostgreSQL), a lone event's lookups on the paths last seen waited
    # on under its name go with its insert; a path the hint missed is looked up after, as before.
    hinted = store._dialect.pipelines  # elsewhere no hint is kept (a lookup costs no round trip)
    first_a, first_b = waiting_runs(store, [(REVIEWED, "data.a", 1), (REVIEWED, "data.b", 2)])
    store.ingest_events([NewEvent(REVIEWED, json.dumps({"a": 1, "b": 2}), "rev-1")], now_ms=T0 + 5)
    assert [wait_status(store, i) for i in (first_a, first_b)] == [StepStatus.COMPLETED] * 2
    if hinted:  # as read by rev-1, before it resumed them
        assert ingest._HINTS.get(REVIEWED) == ("data.a", "data.b")
    # Now: data.a (hinted) and data.c (not hinted) are waited on; data.b (hinted) no longer is.
    on_a, on_c, other_a = waiting_runs(
        store, [(REVIEWED, "data.a", 3), (REVIEWED, "data.c", 4), (REVIEWED, "data.a", 5)], now=T0 + 10
    )
    result = store.ingest_events(
        [NewEvent(REVIEWED, json.dumps({"a": 3, "b": 2, "c": 4}), "rev-2")], now_ms=T0 + 15
    )
    assert result.wakeups.ready_apps == {f"crm-{T0 + 10}"}
    assert {e.run_id for e in result.ended} == {on_a.run_id, on_c.run_id}
    assert [wait_status(store, i) for i in (on_a, on_c, other_a)] == [
        StepStatus.COMPLETED, StepStatus.COMPLETED, StepStatus.WAITING,
    ]  # fmt: skip
    if hinted:
        assert ingest._HINTS.get(REVIEWED) == ("data.a", "data.c")
    # A duplicate of rev-2 (a known id) resumes nothing, whatever the hint prefetched.
    again = store.ingest_events(
        [NewEvent(REVIEWED, json.dumps({"a": 5}), "rev-2")], now_ms=T0 + 20
    )
    assert tuple(again.ended) == () and wait_status(store, other_a) == StepStatus.WAITING


@pytest.mark.postgres_only("plans cached by prepared statements are PostgreSQL's")
def test_the_waits_lookups_use_the_name_index_however_small_the_table_was_when_first_run(
    store: SqlStore, admin: Engine
) -> None:
    # On a connection, a prepared statement gets a generic plan from its sixth execution on, made
    # with the table sizes of that moment and kept (nothing analyzes the tables here). With a few
    # hundred open waits, an index on (status, expires_ms) tied with the match-path index, and a
    # plan that took it read every open wait per event once there were 100,000 (13-20 ms per
    # event). Since migration 0003 PostgreSQL's deadlines index is partial (open waits only), which
    # no lookup by name can use: the lookups are prepared like any other statement.
    store.register_functions("crm", [FunctionSpec("import", (UPLOADED,))], now_ms=T0)
    with admin.connect() as conn:
        # Bulk rows on another name stand in for runs parked in waits (no run or step rows behind
        # them, so the foreign key goes: this database is the test's own).
        conn.exec_driver_sql("ALTER TABLE waits DROP CONSTRAINT fk_waits_run_id_step_id_steps")
        bulk = (
            "INSERT INTO waits (run_id, step_id, event_name, match_path, match_value, match_hash,"
            " expires_ms, status) SELECT 'r' || g, 'w', %(name)s, 'data.k', 'v', md5(g::text), 1,"
            " 'waiting' FROM generate_series(%(first)s::int, %(last)s::int) AS g"
        )
        conn.exec_driver_sql(bulk, {"name": OTHER, "first": 1, "last": 200})

    def lookups(tag: str, n: int) -> None:
        # A name with no open wait (looked up, then guarded on its hints) and one with open waits
        # on a path (its paths and the waits matching the event's value there).
        for i in range(n):
            store.ingest_events([NewEvent(UPLOADED, "{}", f"up-{tag}-{i}")], now_ms=T0 + i)
            store.ingest_events([NewEvent(OTHER, json.dumps({"k": "x"}), f"ot-{tag}-{i}")], now_ms=T0 + i)

    lookups("small", 20)  # well past psycopg's prepare threshold (5) and PostgreSQL's (5 more)
    with admin.connect() as conn:
        conn.exec_driver_sql(bulk, {"name": OTHER, "first": 201, "last": 100_000})

    def scans() -> tuple[int, int]:
        """(sequential scans of waits, scans of the name index)."""
        store._run(lambda tx: tx.raw.execute("SELECT pg_stat_force_next_flush()"))
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
            seq = "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'waits'"
            idx = "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %(index)s"
            by_name = "ix_waits_event_name_status_match_path_match_hash"
            return (
                int(conn.exec_driver_sql(seq).scalar_one()),
                int(conn.exec_driver_sql(idx, {"index": by_name}).scalar_one()),
            )

    seq_before, by_name_before = scans()
    lookups("large", 3)
    seq_after, by_name_after = scans()
    assert seq_after == seq_before
    assert by_name_after > by_name_before
