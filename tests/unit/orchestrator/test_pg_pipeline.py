"""PostgreSQL's pipeline (``store.postgres._pipeline``): statements go through libpq in one round trip,
each prepared once per connection under a name of the store's own. What must hold: a statement is
prepared for the parameter types it is sent with, a Parse that an earlier failure skipped is never
taken for done, the first failure is what is raised, and each result reads as the driver's cursor
would. And the write connections the store keeps between transactions (``SqlStore._pipelined_writer``):
one that served a transaction that raised is never handed out with that transaction open."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from orchestrator.store import postgres
from orchestrator.store.dialect import IDLE_WRITERS
from orchestrator.store.postgres import _pipeline
from orchestrator.store.prepared import Prepared
from orchestrator.store.sql import SqlStore

pytestmark = pytest.mark.postgres_only("the pipeline is PostgreSQL's")


@pytest.fixture
def conn(store: SqlStore) -> Iterator[Any]:
    """A pooled connection of the store, in autocommit mode (as the store's write transactions)."""
    pooled = store._engine.raw_connection()
    driver = pooled.driver_connection
    driver.autocommit = True
    try:
        yield driver
    finally:
        pooled.close()


def test_statements_return_their_rows_in_order(conn: Any) -> None:
    first, second = _pipeline(conn, [("SELECT %(a)s::int + 1", {"a": 1}), ("SELECT %s::text", ("x",))])
    assert first.fetchall() == [(2,)] and second.fetchall() == [("x",)]


def test_one_text_sent_with_other_parameter_types_is_prepared_for_them(conn: Any) -> None:
    # psycopg dumps a small int as int2 and a large one as int8: one statement per set of types.
    for value in (1, 2**40, 3):
        (cursor,) = _pipeline(conn, [("SELECT %(v)s", {"v": value})])
        assert cursor.fetchall() == [(value,)]


def test_a_statement_after_a_failure_is_prepared_again_next_time(conn: Any) -> None:
    # Its Parse came after the failing statement in the same pipeline, so the server skipped it.
    late = "SELECT %(v)s::text || 'late'"
    with pytest.raises(psycopg.errors.DivisionByZero):
        _pipeline(conn, [("BEGIN", None), ("SELECT 1 / %(z)s", {"z": 0}), (late, {"v": "a"})])
    _pipeline(conn, [("ROLLBACK", None)])
    (cursor,) = _pipeline(conn, [(late, {"v": "b"})])
    assert cursor.fetchall() == [("blate",)]


def test_the_first_failure_is_raised_and_the_connection_goes_on(conn: Any) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable):
        _pipeline(conn, [("BEGIN", None), ("SELECT * FROM no_such_table", None), ("SELECT 1 / 0", None)])
    _pipeline(conn, [("ROLLBACK", None)])
    (cursor,) = _pipeline(conn, [("SELECT 41 + %(one)s", {"one": 1})])
    assert cursor.fetchall() == [(42,)]


def test_a_value_the_driver_cannot_send_fails_the_call_and_leaves_the_connection_usable(conn: Any) -> None:
    # PostgreSQL text cannot hold NUL: psycopg refuses it before anything is sent.
    with pytest.raises(psycopg.DataError):
        _pipeline(conn, [("SELECT %(v)s::text", {"v": "a\x00b"})])
    assert not conn.closed
    (cursor,) = _pipeline(conn, [("SELECT %(v)s::text", {"v": "ab"})])
    assert cursor.fetchall() == [("ab",)]


def test_statements_the_server_lost_are_prepared_again_after_one_failure(conn: Any) -> None:
    query = "SELECT %(v)s::int * 2"
    _pipeline(conn, [(query, {"v": 1})])
    conn.execute("DEALLOCATE ALL")  # as a pooler or another client on the session could
    with pytest.raises(psycopg.errors.InvalidSqlStatementName) as lost:
        _pipeline(conn, [(query, {"v": 2})])
    assert lost.value.sqlstate in postgres.RETRYABLE_SQLSTATES  # the store runs the transaction again
    (cursor,) = _pipeline(conn, [(query, {"v": 3})])
    assert cursor.fetchall() == [(6,)]


def test_past_the_cap_statements_go_unnamed(conn: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "MAX_PREPARED", 2)
    texts = [f"SELECT %(v)s::int + {i}" for i in range(5)]
    cursors = _pipeline(conn, [(text, {"v": 10}) for text in texts])
    assert [c.fetchall() for c in cursors] == [[(10 + i,)] for i in range(5)]
    names = conn.execute("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE '_durable_%'")
    assert names.fetchone() == (2,)


def test_each_result_reads_as_a_cursor(conn: Any) -> None:
    # Rows are decoded at the first fetch; most results (writes) are never fetched.
    results = _pipeline(
        conn,
        [
            ("BEGIN", None),
            ("CREATE TEMP TABLE numbers (v int) ON COMMIT DROP", None),
            ("INSERT INTO numbers VALUES (1), (2), (3)", None),
            ("UPDATE numbers SET v = v + 10 WHERE v > %(m)s", {"m": 1}),
            ("SELECT v AS value, (v * 2)::text AS twice FROM numbers ORDER BY v", None),
            ("SELECT v FROM numbers WHERE v < 0", None),
            ("COMMIT", None),
        ],
    )
    _, _, inserted, updated, rows, empty, committed = results
    assert (inserted.rowcount, inserted.statusmessage) == (3, "INSERT 0 3")
    assert (updated.rowcount, updated.statusmessage) == (2, "UPDATE 2")
    assert inserted.description is None
    assert [column[0] for column in rows.description] == ["value", "twice"]
    assert rows.rowcount == 3
    assert rows.fetchone() == (1, "2")
    assert rows.fetchall() == [(12, "24"), (13, "26")]
    assert rows.fetchone() is None and rows.fetchall() == []
    assert (empty.rowcount, empty.fetchone(), empty.fetchall()) == (0, None, [])
    assert committed.statusmessage == "COMMIT"
    with pytest.raises(psycopg.ProgrammingError):
        updated.fetchall()  # a write returns no rows


_SCRATCH_INSERT = Prepared(text("INSERT INTO scratch (v) VALUES (:v)"))


@pytest.fixture
def scratch(admin: Engine) -> Iterator[Callable[[], list[int]]]:
    """A table the test writes through the store; returns a reader of its values."""
    with admin.begin() as c:
        c.exec_driver_sql("CREATE TABLE scratch (v int)")

    def values() -> list[int]:
        with admin.connect() as c:
            return sorted(c.exec_driver_sql("SELECT v FROM scratch").scalars())

    yield values
    with admin.begin() as c:
        c.exec_driver_sql("DROP TABLE scratch")


def test_a_write_transaction_that_raised_leaves_nothing_to_the_next_on_its_connection(
    store: SqlStore, scratch: Callable[[], list[int]]
) -> None:
    def raises_after_its_insert_was_sent(tx: Any) -> None:
        _SCRATCH_INSERT.run(tx, v=1)  # sent now, with the BEGIN: the server holds it, uncommitted
        raise RuntimeError("the call failed after its first round trip")

    with pytest.raises(RuntimeError):
        store._run(raises_after_its_insert_was_sent)
    assert store._engine.pool.checkedout() == 0  # back in the pool (rolled back), not kept
    store._run(lambda tx: _SCRATCH_INSERT.run_later(tx, v=2))
    assert scratch() == [2]


def test_write_connections_are_kept_between_transactions_up_to_the_bound(store: SqlStore) -> None:
    pids = {store._run(lambda tx: tx.raw.info.backend_pid) for _ in range(5)}
    assert len(pids) == 1  # sequential writes: one connection, kept
    assert store._engine.pool.checkedout() == 1  # idle between them, out of the pool

    # Concurrent writes take more; past the bound, those that end go back to the pool.
    started = threading.Barrier(IDLE_WRITERS + 2)

    def meets_the_others(tx: Any) -> None:
        started.wait(timeout=30)

    with ThreadPoolExecutor(IDLE_WRITERS + 2) as pool:
        list(pool.map(lambda _: store._run(meets_the_others), range(IDLE_WRITERS + 2)))
    assert store._engine.pool.checkedout() == IDLE_WRITERS


def test_a_connection_let_go_is_freed_with_what_the_pipeline_kept_for_it(store: SqlStore) -> None:
    # What the pipeline keeps per connection (its names, its converter) goes with the connection:
    # the converter refers to the connection, so a weak mapping to it would keep both forever.
    pooled = store._engine.raw_connection()
    driver = pooled.driver_connection
    driver.autocommit = True
    _pipeline(driver, [("SELECT %(v)s::int", {"v": 1})])
    gone = weakref.ref(driver)
    pooled.invalidate()  # closed, and dropped by the pool
    del pooled, driver
    gc.collect()
    assert gone() is None
