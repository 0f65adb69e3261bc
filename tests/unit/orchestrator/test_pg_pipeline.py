"""PostgreSQL's pipeline (``store.postgres._pipeline``): statements go through libpq in one round trip,
each prepared once per connection under a name of the store's own. What must hold: a statement is
prepared for the parameter types it is sent with, a Parse that an earlier failure skipped is never
taken for done, and the first failure is what is raised."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from orchestrator.store import postgres
from orchestrator.store.postgres import _pipeline
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
