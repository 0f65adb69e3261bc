"""SQLite only: the WAL is copied back into the database file by a thread of the store, never by a
commit (SQLite's automatic checkpoint runs inside the commit that crosses its threshold, which then
takes ten times as long: every p99 of the latency shapes), and that thread ends with the store.
Write transactions are begun and ended on the driver, and a Core statement inside one (SQLAlchemy
then begins its own bookkeeping) changes nothing about what commits and what rolls back."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, literal, select

from orchestrator.engine.model import Completion, FunctionSpec, NewEvent, StepOutput, StepStatus, WorkItem
from orchestrator.store import factory, sqlite, txn
from orchestrator.store import schema as t
from orchestrator.store.sql import SqlStore
from orchestrator.store.txn import Tx
from tests.support.waiting import wait_until

pytestmark = pytest.mark.sqlite_only("the WAL and its checkpoints are SQLite's")

T0 = 1_800_000_000_000
LEASE = 30_000


@pytest.fixture
def file_store(tmp_path: Path) -> Iterator[tuple[SqlStore, Path]]:
    path = tmp_path / "orchestrator.db"
    store = factory.open_store(f"sqlite:///{path}", rng=random.Random(7), db_clock=False)
    try:
        yield store, path
    finally:
        store.close()


def _checkpointers() -> int:
    return sum(thread.name == "sqlite-checkpointer" for thread in threading.enumerate())


def test_commits_leave_the_wal_to_the_stores_own_checkpoints(file_store: tuple[SqlStore, Path]) -> None:
    store, path = file_store
    threshold = store._run(lambda tx: tx.raw.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    assert threshold == sqlite.WRITER_AUTOCHECKPOINT_PAGES  # far past what the thread lets it reach

    store.register_functions("shop", [FunctionSpec("bill", ("order/placed",))], now_ms=T0)
    before = path.stat().st_size
    # One transaction each: several pages per event, thousands of WAL frames in all, which the
    # writer (at its threshold) would never copy back.
    for i in range(300):
        store.ingest_events([NewEvent(name="order/placed", data_json=f'{{"n": {i}}}')], now_ms=T0 + i)
    wait_until(lambda: path.stat().st_size > before, timeout=30, message="the WAL copied into the file")


def test_the_checkpointer_ends_with_its_store(tmp_path: Path) -> None:
    before = _checkpointers()
    store = factory.open_store(f"sqlite:///{tmp_path / 'o.db'}")
    assert _checkpointers() == before + 1
    store.close()
    assert _checkpointers() == before


def _insert_event_through_core(tx: Tx, event_id: str) -> None:
    tx.conn.execute(insert(t.events).values(id=event_id, name="a/b", data="{}", ts_ms=T0, received_ms=T0))


def _events(store: SqlStore) -> int:
    return int(store._run(lambda tx: tx.conn.execute(select(func.count()).select_from(t.events)).scalar()))


class _Refused(Exception):
    pass


@pytest.mark.parametrize("grouped", [False, True], ids=["alone", "in a group"])
def test_a_core_statement_inside_a_driver_transaction_commits_and_rolls_back_with_it(
    file_store: tuple[SqlStore, Path], grouped: bool
) -> None:
    store, _ = file_store

    def fails(tx: Tx) -> None:
        _insert_event_through_core(tx, "rolled-back")
        raise _Refused("after a Core statement")

    def succeeds(tx: Tx) -> None:
        _insert_event_through_core(tx, "committed")

    if grouped:
        with store.grouped():
            with pytest.raises(_Refused):
                store._run(fails)  # its savepoint rolls back; the group goes on
            store._run(succeeds)
    else:
        with pytest.raises(_Refused):
            store._run(fails)
        store._run(succeeds)

    assert _events(store) == 1
    # Nothing left open, neither by the database nor by SQLAlchemy's bookkeeping: the next
    # transaction begins as any other (BEGIN IMMEDIATE: the write lock at once).
    writer = store._writer
    assert writer is not None and not writer.in_transaction()
    assert not writer.connection.driver_connection.in_transaction
    store.ingest_events([NewEvent(name="a/b", data_json="{}", id="after")], now_ms=T0)
    assert _events(store) == 2


def test_a_memo_too_long_for_one_string_is_read_step_by_step(file_store: tuple[SqlStore, Path]) -> None:
    # The claim returns memos as one JSON string per run; past SQLite's longest string the claim
    # runs again without them and reads the steps on their own. Here the longest string is lowered
    # to 1,000 bytes: each output fits, the two together do not.
    store, _ = file_store
    store.register_functions("shop", [FunctionSpec("bill", ("order/placed",))], now_ms=T0)
    (run_id,) = store.ingest_events([NewEvent("order/placed", "{}")], now_ms=T0).run_ids
    (item,) = claim(store, T0)
    outputs = {"a": json.dumps("x" * 600), "b": json.dumps("y" * 500)}
    for step_id, output in outputs.items():
        completion = Completion(run_id, item.lease_id, step_id, StepOutput(output))
        store.complete_step(completion, now_ms=T0, lease_ms=LEASE)
    store.release_work(run_id, item.lease_id, now_ms=T0 + 1)
    default = store._run(lambda tx: tx.raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000))
    try:
        (again,) = claim(store, T0 + 2)
    finally:
        store._run(lambda tx: tx.raw.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, default))
    assert [(s.id, s.status, s.output_json, s.position) for s in again.steps] == [
        ("a", StepStatus.COMPLETED, outputs["a"], 0),
        ("b", StepStatus.COMPLETED, outputs["b"], 1),
    ]
    assert store.get_run(run_id).steps[0].status == StepStatus.COMPLETED  # the transaction went on


def claim(store: SqlStore, now: int) -> tuple[WorkItem, ...]:
    return store.claim_work(
        app_id="shop", function_ids=(), worker_id="w", max_items=10, now_ms=now, lease_ms=LEASE
    ).items


def test_a_writer_closed_inside_a_transaction_is_replaced_for_the_next_one(
    file_store: tuple[SqlStore, Path],
) -> None:
    # A Core statement opens SQLAlchemy's own transaction; the driver connection then dies. The
    # transaction fails, and the next write runs on a new connection (not on one stuck waiting
    # for a rollback that never came).
    store, _ = file_store

    def closed_under_it(tx: Tx) -> None:
        tx.conn.execute(select(literal(1)))
        tx.raw.close()
        txn.max_seq(tx)  # a store statement: the lost connection is invalidated

    with pytest.raises(Exception):  # noqa: B017 (the next writes are what this test is about)
        store._run(closed_under_it)
    store.register_functions("shop", [FunctionSpec("bill", ("order/placed",))], now_ms=T0)
    assert len(store.ingest_events([NewEvent("order/placed", "{}")], now_ms=T0).run_ids) == 1
