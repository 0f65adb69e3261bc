"""PostgreSQL replicas sharing one database, at the store level: concurrent claims never hand out a run
twice, concurrent timer passes fire each timer once, one replica hears another's ready work
(LISTEN/NOTIFY), and leases are timed by the database's clock whatever the caller's clock says."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from orchestrator.engine.model import Completion, FunctionSpec, NewEvent, WaitForEvent
from orchestrator.store import factory
from orchestrator.store.sql import SqlStore
from tests.support import wait_until

APP, EVENT = "crm", "api/contact_list.uploaded"
LEASE_MS = 60_000
RUNS = 120


@pytest.fixture
def replicas(postgres_db_url: str) -> Iterator[tuple[SqlStore, SqlStore]]:
    """Two stores on one database, each with its own connection pool, as two replicas have; time is
    driven by the tests' ``now_ms`` (the database clock has its own test below)."""
    first = factory.open_store(postgres_db_url, db_clock=False)
    second = factory.open_store(postgres_db_url, db_clock=False)
    try:
        yield first, second
    finally:
        first.close()
        second.close()


@contextlib.contextmanager
def _listening(store: SqlStore) -> Iterator[list[str | None]]:
    """What ``store`` hears (app ids), once it is connected and listening; stops it at the end."""
    heard: list[str | None] = []
    stop = threading.Event()
    listener = threading.Thread(target=store.listen, args=(heard.append, stop))
    listener.start()
    try:
        wait_until(lambda: None in heard)  # connected and listening
        yield heard
    finally:
        stop.set()
        listener.join(timeout=10)
    assert not listener.is_alive()


def _start_runs(store: SqlStore, count: int) -> list[str]:
    store.register_functions(APP, [FunctionSpec("import", (EVENT,))], now_ms=0)
    return list(store.ingest_events([NewEvent(EVENT) for _ in range(count)], now_ms=0).run_ids)


def _in_threads(work: Callable[[int], None], count: int) -> None:
    failures: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            work(index)
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []


def test_concurrent_claims_on_two_replicas_hand_out_each_run_once(
    replicas: tuple[SqlStore, SqlStore],
) -> None:
    run_ids = _start_runs(replicas[0], RUNS)
    claimed: list[list[str]] = [[] for _ in range(4)]

    def claim_until_empty(index: int) -> None:
        store = replicas[index % 2]
        while True:
            items = store.claim_work(
                app_id=APP, function_ids=(), worker_id=f"w{index}", max_items=3, now_ms=0, lease_ms=LEASE_MS
            ).items
            if not items:
                return
            claimed[index].extend(item.run_id for item in items)

    _in_threads(claim_until_empty, 4)
    everything = [run_id for batch in claimed for run_id in batch]
    assert sorted(everything) == sorted(run_ids)  # each run exactly once, none left behind
    assert sum(1 for batch in claimed if batch) >= 2  # the claimers really ran side by side


def test_concurrent_timer_passes_fire_each_wait_timeout_once(replicas: tuple[SqlStore, SqlStore]) -> None:
    first, second = replicas
    _start_runs(first, 60)
    items = first.claim_work(
        app_id=APP, function_ids=(), worker_id="w", max_items=60, now_ms=0, lease_ms=LEASE_MS
    ).items
    for item in items:
        first.complete_step(
            Completion(item.run_id, item.lease_id, "wait", WaitForEvent("api/never", "", 1_000)),
            now_ms=0,
            lease_ms=LEASE_MS,
        )
    fired = [0, 0]

    def fire(index: int) -> None:
        fired[index] += replicas[index].fire_due_timers(now_ms=2_000, since_ms=0).timed_out_waits

    _in_threads(fire, 2)
    assert sum(fired) == len(items)
    assert second.fire_due_timers(now_ms=3_000, since_ms=0).timed_out_waits == 0


def test_a_replica_hears_the_work_another_replica_made_ready(replicas: tuple[SqlStore, SqlStore]) -> None:
    listening, writing = replicas
    with _listening(listening) as heard:
        _start_runs(writing, 1)
        wait_until(lambda: APP in heard)


@pytest.mark.parametrize(("runs", "announced"), [(1, False), (2, True)], ids=["all-claimed", "one-left"])
def test_work_the_same_transaction_claimed_is_not_announced(
    replicas: tuple[SqlStore, SqlStore], runs: int, announced: bool
) -> None:
    # A parked poller's claim taken in the transaction that made its work ready (a handoff) leaves
    # no other replica anything to wake for; one ready run left over is announced.
    listening, writing = replicas
    writing.register_functions(APP, [FunctionSpec("import", (EVENT,))], now_ms=0)
    writing.register_functions("marker", [FunctionSpec("mark", ("marker/go",))], now_ms=0)
    with _listening(listening) as heard:
        with writing.grouped():
            writing.ingest_events([NewEvent(EVENT) for _ in range(runs)], now_ms=1_000)
            claimed = writing.claim_work(
                app_id=APP, function_ids=(), worker_id="w", max_items=1, now_ms=1_000, lease_ms=LEASE_MS
            )
        assert len(claimed.items) == 1
        # Notifications arrive in commit order: once the marker's is heard, APP's would have been.
        writing.ingest_events([NewEvent("marker/go")], now_ms=1_000)
        wait_until(lambda: "marker" in heard)
    assert (APP in heard) == announced


def test_leases_are_timed_by_the_database_clock(postgres_db_url: str) -> None:
    store = factory.open_store(postgres_db_url)  # db_clock=True, as the server opens it
    request = _start_runs(store, 1)
    assert request
    before_ms = int(time.time() * 1000)
    # A replica whose clock is a day late still leases for LEASE_MS from the database's now.
    (item,) = store.claim_work(
        app_id=APP,
        function_ids=(),
        worker_id="w",
        max_items=1,
        now_ms=before_ms - 86_400_000,
        lease_ms=LEASE_MS,
    ).items
    after_ms = int(time.time() * 1000)
    store.close()
    # The database server runs on this machine: its clock and ours agree within the tolerance.
    assert before_ms + LEASE_MS - 5_000 <= item.lease_expires_ms <= after_ms + LEASE_MS + 5_000
