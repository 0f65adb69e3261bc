"""Races the store must win, each forced deterministically on a real database:

- PostgreSQL (READ COMMITTED): a repeat of a completion that waits for the run's row lock while the
  first one commits the step reads the step from its snapshot taken before the wait; it must still
  answer as a duplicate (the transaction runs again), never fail or record twice.
- SQLite: after an error that makes SQLite roll the whole transaction back, a group commit must not
  go on running calls (each would commit alone outside the group) and must report the group failed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, select, text

from orchestrator import clock, errors
from orchestrator.engine.model import (
    Completion,
    Directive,
    FunctionSpec,
    NewEvent,
    RunFilter,
    StepOutput,
    StepStatus,
    WorkItem,
)
from orchestrator.store import completions
from orchestrator.store import schema as t
from orchestrator.store.sql import SqlStore
from orchestrator.store.txn import Tx

T0 = 1_800_000_000_000
LEASE = 30_000


def _start_and_claim(store: SqlStore) -> WorkItem:
    store.register_functions("crm", [FunctionSpec("f", ("a/b",), 2)], now_ms=T0)
    store.ingest_events([NewEvent("a/b", json.dumps({}), None)], now_ms=T0)
    (item,) = store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=1, now_ms=T0, lease_ms=LEASE
    ).items
    return item


def _until(predicate: Callable[[], bool], within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.postgres_only("row locks and snapshots of concurrent transactions are PostgreSQL's")
def test_a_repeated_completion_that_waited_for_the_first_answers_as_a_duplicate(
    store: SqlStore, db_url: str
) -> None:
    item = _start_and_claim(store)
    completion = Completion(item.run_id, item.lease_id, "s1", StepOutput('"first"'))
    engine = create_engine(db_url)
    first_holds_the_lock = threading.Event()

    def waiting_for_a_row_lock() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one()
            )

    def first(tx: Tx) -> object:
        # Records the step under the run's row lock, then keeps the lock until the repeat waits on it.
        result = completions.complete(tx, completion, T0 + 1, LEASE)
        tx.flush()
        first_holds_the_lock.set()
        _until(lambda: waiting_for_a_row_lock() >= 1)
        return result

    results: dict[str, object] = {}
    holder = threading.Thread(target=lambda: results.setdefault("first", store._run(first)))
    holder.start()
    try:
        assert first_holds_the_lock.wait(20)
        repeat = store.complete_step(completion, now_ms=T0 + 2, lease_ms=LEASE)
    finally:
        holder.join(20)
        engine.dispose()
    assert repeat.directive == Directive.CONTINUE
    assert repeat.output_json == '"first"'
    (run,) = store.list_runs(RunFilter(include_steps=True))
    assert [(s.id, s.status, s.output_json) for s in run.steps] == [("s1", StepStatus.COMPLETED, '"first"')]


@pytest.mark.sqlite_only("SQLite ends a transaction by itself after an interrupt (or a full disk)")
def test_a_group_whose_transaction_sqlite_rolled_back_commits_nothing(store: SqlStore) -> None:
    store.register_functions("crm", [FunctionSpec("f", ("a/b",), 2)], now_ms=T0)

    def send(event_id: str) -> Callable[[], object]:
        return lambda: store.ingest_events([NewEvent("a/b", "{}", event_id)], now_ms=T0)

    def interrupted(tx: Tx) -> None:
        # What SQLite does by itself after SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM or an interrupt
        # during a write: the whole transaction is rolled back, and the statement fails.
        tx.raw.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error")

    failures: list[BaseException] = []
    with pytest.raises(errors.StoreUnavailable):
        with store.grouped():
            for call in (send("before"), lambda: store._run(interrupted), send("after")):
                try:
                    call()
                except Exception as exc:
                    failures.append(exc)
    # The call after the rollback was refused, not committed alone outside the group.
    assert len(failures) == 2 and isinstance(failures[-1], errors.StoreUnavailable), failures
    with store._engine.connect() as conn:
        assert conn.execute(select(t.events.c.id)).all() == []
        assert conn.execute(select(t.runs.c.id)).all() == []
    # The store still works afterwards.
    assert store.ingest_events([NewEvent("a/b", "{}", "later")], now_ms=clock.now_ms()).run_ids
