"""``store.prepared.Prepared`` on both dialects: statements compiled once and run on the driver's
connection return what SQLAlchemy would, whatever the lengths of their IN-lists, and fail as
SQLAlchemy would (``DBAPIError`` subclasses), which the store maps as before: a duplicate key is an
``IntegrityError``, a database that cannot be reached ``StoreUnavailable``, and a connection lost
before the commit reruns the transaction on a new connection (``StoreUnavailable`` once the attempts
are used up)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, bindparam, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from orchestrator import errors
from orchestrator.engine.model import NewEvent
from orchestrator.store import factory
from orchestrator.store import schema as t
from orchestrator.store.ingest import _MATCH_WAITS
from orchestrator.store.leases import MAX_FUNCTION_SCANS, function_params, lease_oldest
from orchestrator.store.prepared import MAX_EXPANSIONS, Prepared
from orchestrator.store.sql import MAX_TX_ATTEMPTS, SqlStore
from orchestrator.store.txn import Tx
from tests.support.stores import backend_pid, cap_database_size, terminate_backend

T0 = 1_800_000_000_000
_e = t.events
EVENT_COUNT = MAX_EXPANSIONS + 20
NAMES = ("a/x", "a/y", "a/z")


def by_ids() -> Prepared:
    """A new statement (its caches start empty): events whose id is in a list."""
    return Prepared(
        select(_e.c.id).where(_e.c.id.in_(bindparam("ids", expanding=True))).order_by(_e.c.id),
        expanding=("ids",),
    )


def run(store: SqlStore, statement: Prepared, **params: Any) -> list[Any]:
    """The first column of every row, in a transaction of the store (on its own connection)."""
    return store._run(lambda tx: statement.run(tx, **params).scalars())


@pytest.fixture
def events(store: SqlStore) -> dict[str, tuple[str, int]]:
    """Events e000, e001, ... by id: (name, ts_ms)."""
    made = {f"e{i:03d}": (NAMES[i % 3], T0 + i) for i in range(EVENT_COUNT)}
    store.ingest_events([NewEvent(name, "{}", id, ts) for id, (name, ts) in made.items()], now_ms=T0)
    return made


def test_an_in_list_of_any_length_returns_its_rows(store: SqlStore, events: dict[str, Any]) -> None:
    statement = by_ids()
    ids = sorted(events)
    for n in (0, 1, 2, 7, 1, 0, 7, 3):
        wanted = ids[10 : 10 + n]
        assert run(store, statement, ids=[*reversed(wanted), "no-such-event"]) == wanted
        assert run(store, statement, ids=wanted) == wanted


def test_more_distinct_list_lengths_than_are_kept_still_return_the_right_rows(
    store: SqlStore, events: dict[str, Any]
) -> None:
    statement = by_ids()
    ids = sorted(events)
    lengths = [*range(MAX_EXPANSIONS + 12), 0, 1, 5, MAX_EXPANSIONS - 1, MAX_EXPANSIONS, MAX_EXPANSIONS + 11]
    for n in lengths:
        wanted = ids[:n]
        assert run(store, statement, ids=wanted[::-1]) == wanted, n
    # One text per length is kept, up to the bound; longer lists are expanded at each execution.
    assert len(statement._expansions) == MAX_EXPANSIONS


def test_lists_literals_and_scalars_each_bind_in_their_place(
    store: SqlStore, events: dict[str, tuple[str, int]]
) -> None:
    # Two lists around a scalar and a literal: a positional paramstyle (SQLite's) must keep each
    # value in its placeholder's place whatever the lists' lengths.
    statement = Prepared(
        select(_e.c.id)
        .where(
            _e.c.name.in_(bindparam("names", expanding=True)),
            _e.c.ts_ms >= bindparam("since"),
            _e.c.name != "a/z",
            _e.c.id.in_(bindparam("ids", expanding=True)),
        )
        .order_by(_e.c.id),
        expanding=("names", "ids"),
    )
    ids = sorted(events)
    for names in ((), ("a/x",), ("a/z", "a/y"), NAMES):
        for id_count in (0, 1, 4, 30):
            for since in (T0, T0 + 15):
                chosen = ids[:id_count]
                wanted = [
                    i
                    for i in chosen
                    if events[i][0] in names and events[i][1] >= since and events[i][0] != "a/z"
                ]
                assert run(store, statement, names=list(names), since=since, ids=chosen) == wanted


def test_one_statement_serves_both_dialects_in_one_process(tmp_path: Path, postgres_db_url: str) -> None:
    # Module-level statements are shared by every store of the process: each dialect gets its own
    # text (SQLite's positional "?", psycopg's named placeholders), for every list length.
    statement = by_ids()
    by_name = Prepared(select(_e.c.id).where(_e.c.name == bindparam("name")).order_by(_e.c.id))
    stores = [factory.open_store(f"sqlite:///{tmp_path / 'o.db'}"), factory.open_store(postgres_db_url)]
    try:
        for store in stores:
            store.ingest_events([NewEvent("a/b", "{}", f"e{i}") for i in range(3)], now_ms=T0)
        for store in [*stores, *stores]:
            for n in (0, 1, 3):
                assert run(store, statement, ids=[f"e{i}" for i in range(n)]) == [f"e{i}" for i in range(n)]
            assert run(store, by_name, name="a/b") == ["e0", "e1", "e2"]
    finally:
        for store in stores:
            store.close()


INSERT_EVENT = Prepared(
    insert(_e).values({c: bindparam(c) for c in ("id", "name", "data", "ts_ms", "received_ms")})
)


def event_row(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "name": "a/b", "data": "{}", "ts_ms": T0, "received_ms": T0}


def test_a_duplicate_key_is_an_integrity_error_as_from_sqlalchemy(store: SqlStore) -> None:
    def insert_twice(tx: Tx) -> None:
        INSERT_EVENT.run(tx, **event_row("kept-if-committed"))
        INSERT_EVENT.run(tx, **event_row("dup"))
        INSERT_EVENT.run(tx, **event_row("dup"))

    with pytest.raises(IntegrityError) as prepared:
        store._run(insert_twice)
    driver_integrity_error = sqlite3.IntegrityError if store.inline else psycopg.IntegrityError
    assert isinstance(prepared.value.orig, driver_integrity_error)
    assert "INSERT INTO events" in (prepared.value.statement or "")

    # The same statement through SQLAlchemy raises the same class.
    def core_twice(tx: Tx) -> None:
        tx.conn.execute(insert(_e), [event_row("core-dup")])
        tx.conn.execute(insert(_e), [event_row("core-dup")])

    with pytest.raises(IntegrityError) as core:
        store._run(core_twice)
    assert type(core.value) is type(prepared.value)
    # The transaction rolled back as a whole, and the store goes on.
    assert store.ingest_events([NewEvent("a/b", "{}", "dup")], now_ms=T0).ids == ("dup",)
    assert run(store, by_ids(), ids=["kept-if-committed", "dup", "core-dup"]) == ["dup"]


@pytest.mark.sqlite_only("a full disk is SQLite's unavailability; PostgreSQL's is the next test")
def test_a_full_disk_under_a_prepared_statement_is_store_unavailable(store: SqlStore) -> None:
    cap_database_size(store)
    big = '{"blob": "' + "x" * 1_000_000 + '"}'
    with pytest.raises(errors.StoreUnavailable, match="full") as info:
        store.ingest_events([NewEvent("a/b", big, "e-big")], now_ms=T0)  # one event: a prepared insert
    cause = info.value.__cause__
    assert isinstance(cause, OperationalError) and isinstance(cause.orig, sqlite3.OperationalError)
    assert "INSERT INTO events" in (cause.statement or "")
    assert store.ingest_events([NewEvent("a/b", "{}", "e-small")], now_ms=T0).ids == ("e-small",)


TERMINATE = Prepared(text("SELECT pg_terminate_backend(pg_backend_pid())"))
BACKEND_PID = Prepared(text("SELECT pg_backend_pid()"))


def losing_connections(attempts: list[int], raised: list[DBAPIError], *, lost: int) -> Any:
    """Work that inserts an event per attempt (``e-1``, ``e-2``, ...), notes its backend's pid in
    ``attempts``, and has the server terminate its connection on its first ``lost`` attempts (the
    errors that raises go to ``raised``); returns its pid."""

    def work(tx: Tx) -> int:
        pid = int(BACKEND_PID.run(tx).scalar())
        attempts.append(pid)
        INSERT_EVENT.run(tx, **event_row(f"e-{len(attempts)}"))
        if len(attempts) <= lost:
            try:
                TERMINATE.run(tx).all()
            except DBAPIError as exc:
                raised.append(exc)
                raise
        return pid

    return work


def assert_lost_connections(raised: list[DBAPIError]) -> None:
    for exc in raised:
        assert isinstance(exc, OperationalError) and isinstance(exc.orig, psycopg.OperationalError)
        assert exc.connection_invalidated  # a disconnect, as SQLAlchemy would have said
        assert "pg_terminate_backend" in (exc.statement or "")


@pytest.mark.postgres_only("a session terminated by the server is PostgreSQL's unavailability")
def test_a_connection_lost_under_a_prepared_statement_reruns_its_transaction_on_a_new_one(
    store: SqlStore,
) -> None:
    attempts: list[int] = []
    raised: list[DBAPIError] = []
    # Lost before it committed: nothing of it took effect, so it runs again, on another connection.
    pid = store._run(losing_connections(attempts, raised, lost=1))
    assert_lost_connections(raised)
    assert len(raised) == 1 and len(attempts) == 2
    assert attempts[1] == pid != attempts[0]  # the dead connection was not handed out again
    assert run(store, by_ids(), ids=["e-1", "e-2"]) == ["e-2"]  # only the attempt that committed


@pytest.mark.postgres_only("a session terminated by the server is PostgreSQL's unavailability")
def test_a_connection_found_dead_replaces_every_pooled_connection(store: SqlStore) -> None:
    # Two idle connections in the pool, as after a burst of calls (after a database restart, every
    # one of them would be dead).
    with store._engine.connect() as one, store._engine.connect() as other:
        pooled = {conn.execute(text("SELECT pg_backend_pid()")).scalar() for conn in (one, other)}
    attempts: list[int] = []
    raised: list[DBAPIError] = []
    store._run(losing_connections(attempts, raised, lost=1))
    assert attempts[0] in pooled
    assert attempts[1] not in pooled  # the run again found none of the old pool's connections


@pytest.mark.postgres_only("a session terminated by the server is PostgreSQL's unavailability")
def test_a_connection_lost_at_every_attempt_is_store_unavailable(store: SqlStore) -> None:
    attempts: list[int] = []
    raised: list[DBAPIError] = []
    with pytest.raises(errors.StoreUnavailable) as info:
        store._run(losing_connections(attempts, raised, lost=MAX_TX_ATTEMPTS))
    assert info.value.__cause__ is raised[-1]
    assert_lost_connections(raised)
    # Every attempt ran on a connection of its own, and none committed anything.
    assert len(raised) == MAX_TX_ATTEMPTS and len(set(attempts)) == MAX_TX_ATTEMPTS
    assert run(store, by_ids(), ids=[f"e-{n}" for n in range(1, MAX_TX_ATTEMPTS + 1)]) == []
    # The pool replaces the dead connections: the next call succeeds.
    assert store.ingest_events([NewEvent("a/b", "{}", "e-after")], now_ms=T0).ids == ("e-after",)


@pytest.mark.postgres_only("a session terminated by the server is PostgreSQL's unavailability")
def test_a_connection_lost_at_the_commit_is_store_unavailable_and_not_run_again(
    store: SqlStore, admin: Engine
) -> None:
    attempts: list[int] = []

    def work(tx: Tx) -> None:
        attempts.append(backend_pid(tx))
        INSERT_EVENT.run(tx, **event_row("e-1"))
        # Its statements all ran: only the COMMIT is left, and it finds the connection gone. Whether
        # a commit that broke happened is not known in general: it is reported, never run again.
        terminate_backend(admin, attempts[-1])

    with pytest.raises(errors.StoreUnavailable) as info:
        store._run(work)
    cause = info.value.__cause__
    assert isinstance(cause, OperationalError) and cause.connection_invalidated
    assert len(attempts) == 1
    assert run(store, by_ids(), ids=["e-1"]) == []
    assert store.ingest_events([NewEvent("a/b", "{}", "e-after")], now_ms=T0).ids == ("e-after",)


@pytest.mark.sqlite_only("SQLite's planner, without statistics, is the one that chose the index on state")
@pytest.mark.parametrize("memos", [True, False])
@pytest.mark.parametrize("functions", [0, 1, 5, MAX_FUNCTION_SCANS + 1])
def test_a_claim_chooses_by_the_claim_index_and_leases_by_primary_key(
    store: SqlStore, functions: int, memos: bool
) -> None:
    # The claim is one UPDATE. Its subquery reads the claim index in its own order (the scan stops
    # after max_items rows, no sort): the app's range, or one range per function the claim names
    # (then the oldest of theirs: a sort of at most max_items rows per function), so that another
    # function's backlog is never read; beyond MAX_FUNCTION_SCANS functions, the app's range
    # filtered. The UPDATE reaches the chosen runs by primary key, and their events and memos by
    # theirs. With "AND state = 'ready'" beside the subquery, SQLite read every ready run through
    # the index on state once a claim had five candidates or more: O(backlog) per claim.
    lease = lease_oldest(functions, memos=memos)
    params: dict[str, Any] = {
        "app_id": "a", "now_ms": T0, "max_items": 100, "lease_id": "lease", "lease_expires_ms": T0,
        "worker_id": "w",
    }  # fmt: skip
    params.update(function_params([f"f{i}" for i in range(functions)]))

    def plan(tx: Tx) -> list[str]:
        compiled, args = lease._bind(tx, params)
        return [str(row[-1]) for row in tx.raw.execute("EXPLAIN QUERY PLAN " + compiled.sql, args)]

    steps = store._run(plan)
    assert steps[0].startswith("SEARCH runs USING") and "(id=?)" in steps[0], steps
    chosen = [step for step in steps if step.startswith(("SEARCH runs", "SCAN runs"))][1:]
    if 1 <= functions <= MAX_FUNCTION_SCANS:
        assert chosen == [
            "SEARCH runs USING INDEX ix_runs_app_id_function_id_state_available_at_ms "
            "(app_id=? AND function_id=? AND state=? AND available_at_ms<?)"
        ] * functions, steps
    else:
        assert chosen == [
            "SEARCH runs USING INDEX ix_runs_app_id_state_available_at_ms "
            "(app_id=? AND state=? AND available_at_ms<?)"
        ], steps
    sorts = [step for step in steps if "TEMP B-TREE" in step]
    # Where ranges are merged: each range's rows (at most max_items) for the merge.
    assert len(sorts) == (functions if 2 <= functions <= MAX_FUNCTION_SCANS else 0), steps
    # No table is scanned: only the ranges' results (of_<i>) and their merge (chosen) are.
    scanned = [step.split()[1] for step in steps if step.startswith("SCAN")]
    assert [name for name in scanned if name != "chosen" and not name.startswith("of_")] == [], steps
    assert [step for step in steps if step.startswith("SEARCH ev")] == [
        "SEARCH ev USING INTEGER PRIMARY KEY (rowid=?)"
    ] * 4, steps
    # The memo: the run's steps by the index on (run_id, ...), one search per leased run.
    memo = [step for step in steps if step.startswith(("SEARCH st", "SCAN st"))]
    if not memos:
        assert memo == [], steps
        return
    assert len(memo) == 1 and memo[0].startswith("SEARCH st USING INDEX sqlite_autoindex_steps_"), steps
    assert memo[0].endswith("(run_id=?)"), steps


@pytest.mark.sqlite_only("the statement that matches waits in one UPDATE is SQLite's")
def test_matching_waits_reaches_them_by_name_status_path_and_hash(store: SqlStore) -> None:
    params = {"name": "a/b", "path": "data.k", "hash": "h", "value": '"v"', "event_id": "e", "now_ms": T0}

    def plan(tx: Tx) -> list[str]:
        compiled, args = _MATCH_WAITS._bind(tx, dict(params))
        return [str(row[-1]) for row in tx.raw.execute("EXPLAIN QUERY PLAN " + compiled.sql, args)]

    assert store._run(plan) == [
        "SEARCH waits USING INDEX ix_waits_event_name_status_match_path_match_hash "
        "(event_name=? AND status=? AND match_path=? AND match_hash=?)"
    ]
