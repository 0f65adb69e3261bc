"""PostgreSQL only: the advisory locks that make event ingest and wait registration of the same event
name exclude each other (so a wait's backlog scan and an event's wait lookup can never both miss), and
only of the same name, checked directly."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from orchestrator.engine.model import NewEvent
from orchestrator.store import factory
from orchestrator.store.postgres import PostgresDialect
from orchestrator.store.sql import SqlStore
from orchestrator.store.txn import Tx
from tests.support.stores import advisory_lock_waiters, seqscan_setting

T0 = 1_800_000_000_000


@pytest.fixture
def pg_store(postgres_schema_url: str) -> Iterator[SqlStore]:
    store = factory.open_store(postgres_schema_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def engine(postgres_schema_url: str) -> Iterator[Engine]:
    eng = create_engine(postgres_schema_url)
    try:
        yield eng
    finally:
        eng.dispose()


def poll(predicate: object, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.mark.parametrize("held_by", ["wait_registration", "ingest"])
def test_ingest_waits_for_a_wait_registration_or_ingest_in_progress(
    pg_store: SqlStore, engine: Engine, held_by: str
) -> None:
    dialect = PostgresDialect()
    done = threading.Event()

    def send() -> None:
        pg_store.ingest_events([NewEvent("a/b")], now_ms=T0)
        done.set()

    with engine.connect() as conn, conn.begin():
        tx = Tx(conn, dialect, random.Random())
        if held_by == "ingest":
            dialect.lock_for_ingest(tx, ["a/b"])
        else:
            dialect.lock_for_wait_registration(tx, "a/b")
        tx.flush()  # the locks are deferred writes: send them now
        sender = threading.Thread(target=send)
        sender.start()
        poll(lambda: advisory_lock_waiters(engine) >= 1)
        assert not done.is_set()
    sender.join(timeout=20)
    assert done.is_set()


def test_wait_registrations_do_not_block_each_other(engine: Engine) -> None:
    dialect = PostgresDialect()
    with engine.connect() as first, first.begin():
        dialect.lock_for_wait_registration(tx := Tx(first, dialect, random.Random()), "a/b")
        tx.flush()
        with engine.connect() as second, second.begin():
            second.execute(text("SET LOCAL lock_timeout = '5s'"))
            dialect.lock_for_wait_registration(tx := Tx(second, dialect, random.Random()), "a/b")
            tx.flush()  # would time out if it blocked


def test_a_wait_registration_does_not_wait_for_ingest_of_another_name(engine: Engine) -> None:
    dialect = PostgresDialect()
    with engine.connect() as ingesting, ingesting.begin():
        dialect.lock_for_ingest(tx := Tx(ingesting, dialect, random.Random()), ["a/b"])
        tx.flush()
        with engine.connect() as registering, registering.begin():
            registering.execute(text("SET LOCAL lock_timeout = '5s'"))
            dialect.lock_for_wait_registration(tx := Tx(registering, dialect, random.Random()), "c/d")
            tx.flush()  # would time out if it blocked


def test_a_claim_plans_the_rest_of_its_transaction_by_the_indexes_and_nothing_after(
    pg_store: SqlStore,
) -> None:
    # (Why: ``txn.PLAN_BY_INDEX``; test_pg_generic_plans checks the claim's plan with it.)
    with pg_store.grouped():
        before = seqscan_setting(pg_store)
        pg_store.claim_work(
            app_id="a", function_ids=(), worker_id="w", max_items=1, now_ms=T0, lease_ms=30_000
        )
        inside = seqscan_setting(pg_store)
    assert (before, inside, seqscan_setting(pg_store)) == ("on", "off", "on")
