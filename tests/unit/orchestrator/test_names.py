"""SQLite: an event's ingest takes its name's triggers and waited match paths from what the writer
connection remembers (``store.names``), and what it remembers stays true: after registrations and
waits on the same connection, after another connection's commits (``PRAGMA data_version``), and
after a group that rolled back."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.engine.model import (
    Completion,
    FunctionSpec,
    NewEvent,
    StepStatus,
    WaitForEvent,
    WorkItem,
)
from orchestrator.store import factory, names
from orchestrator.store.sql import SqlStore

pytestmark = pytest.mark.sqlite_only("what a connection remembers of event names is SQLite's")

T0 = 1_800_000_000_000
LEASE = 30_000
DAY = 86_400_000
UPLOADED, REVIEWED = "api/uploaded", "api/reviewed"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "orchestrator.db"


@pytest.fixture
def store(path: Path) -> Iterator[SqlStore]:
    opened = factory.open_store(f"sqlite:///{path}", rng=random.Random(7), db_clock=False)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def other(path: Path, store: SqlStore) -> Iterator[SqlStore]:
    """Another store on the same file: another connection, as another process would have."""
    opened = factory.open_store(f"sqlite:///{path}", rng=random.Random(8), db_clock=False)
    try:
        yield opened
    finally:
        opened.close()


def statements(store: SqlStore) -> list[str]:
    """The statements the store's writer connection runs from now on (a live list)."""
    seen: list[str] = []
    store._run(lambda tx: tx.raw.set_trace_callback(seen.append))
    seen.clear()
    return seen


def send(store: SqlStore, name: str, now: int = T0, **data: object) -> tuple[str, ...]:
    return store.ingest_events([NewEvent(name, json.dumps(data))], now_ms=now).run_ids


def waiting(store: SqlStore, app: str, match: str, value: str, now: int = T0) -> WorkItem:
    """A run of a function of its own (``app``) on UPLOADED, with ``value`` at ``match``'s key,
    parked in a wait for REVIEWED on ``match``."""
    store.register_functions(app, [FunctionSpec("import", (f"{UPLOADED}.{app}",))], now_ms=now)
    (run_id,) = send(store, f"{UPLOADED}.{app}", now, **{match.removeprefix("data."): value})
    (item,) = store.claim_work(
        app_id=app, function_ids=(), worker_id="w", max_items=1, now_ms=now, lease_ms=LEASE
    ).items
    assert item.run_id == run_id
    store.complete_step(
        Completion(item.run_id, item.lease_id, "wait", WaitForEvent(REVIEWED, match, T0 + DAY)),
        now_ms=now,
        lease_ms=LEASE,
    )
    return item


def wait_status(store: SqlStore, item: WorkItem) -> StepStatus:
    (step,) = store.get_run(item.run_id).steps
    return step.status


def test_a_names_next_event_reads_neither_its_triggers_nor_its_waited_paths(store: SqlStore) -> None:
    store.register_functions("shop", [FunctionSpec("bill", (UPLOADED,))], now_ms=T0)
    seen = statements(store)
    assert len(send(store, UPLOADED, order=1)) == 1
    assert any("function_triggers" in s for s in seen) and any("WITH RECURSIVE" in s for s in seen)
    seen.clear()
    assert len(send(store, UPLOADED, order=2)) == 1
    assert any("data_version" in s for s in seen)
    assert not [s for s in seen if "function_triggers" in s or "WITH RECURSIVE" in s]


def test_a_wait_registered_after_its_name_was_remembered_is_resumed(store: SqlStore) -> None:
    assert send(store, REVIEWED, upload="u0") == ()  # remembered: no function, no waits
    item = waiting(store, "crm", "data.upload", "u1")
    send(store, REVIEWED, T0 + 1, upload="u1")
    assert wait_status(store, item) == StepStatus.COMPLETED


def test_a_wait_on_a_new_path_of_a_remembered_name_is_resumed(store: SqlStore) -> None:
    first = waiting(store, "crm", "data.upload", "u1")
    send(store, REVIEWED, upload="u0")  # remembered with one path
    second = waiting(store, "hr", "data.person", "p1")
    send(store, REVIEWED, T0 + 1, person="p1")
    assert wait_status(store, second) == StepStatus.COMPLETED
    assert wait_status(store, first) == StepStatus.WAITING


def test_functions_registered_after_a_name_was_remembered_are_triggered(store: SqlStore) -> None:
    assert send(store, UPLOADED) == ()
    store.register_functions("shop", [FunctionSpec("bill", (UPLOADED,))], now_ms=T0)
    assert len(send(store, UPLOADED, T0 + 1)) == 1
    store.register_functions("shop", [FunctionSpec("bill", ("api/other",))], now_ms=T0 + 2)
    assert send(store, UPLOADED, T0 + 3) == ()


def test_another_connections_functions_and_waits_are_seen(store: SqlStore, other: SqlStore) -> None:
    assert send(store, UPLOADED) == ()
    assert send(store, REVIEWED, upload="u0") == ()
    other.register_functions("shop", [FunctionSpec("bill", (UPLOADED,))], now_ms=T0)
    item = waiting(other, "crm", "data.upload", "u1")
    assert len(send(store, UPLOADED, T0 + 1)) == 1
    send(store, REVIEWED, T0 + 1, upload="u1")
    assert wait_status(store, item) == StepStatus.COMPLETED


def test_triggers_read_in_a_group_that_rolled_back_are_not_remembered(store: SqlStore) -> None:
    # The group registers a function and sends an event of its trigger, which reads the (not yet
    # committed) trigger; then the whole group rolls back. Remembering that read would start runs
    # of a function that was never registered.
    with pytest.raises(RuntimeError, match="rolled back"), store.grouped():
        store.register_functions("shop", [FunctionSpec("bill", (UPLOADED,))], now_ms=T0)
        assert len(send(store, UPLOADED)) == 1
        raise RuntimeError("rolled back")
    assert send(store, UPLOADED, T0 + 1) == ()


def test_waited_paths_are_read_again_after_a_bounded_number_of_events(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(names, "REREAD_PATHS_AFTER", 3)
    waiting(store, "crm", "data.upload", "u1")
    seen = statements(store)
    for i in range(7):
        send(store, REVIEWED, T0 + i, upload=f"x{i}")
    assert sum("WITH RECURSIVE" in s for s in seen) == 3  # the 1st, 4th and 7th


def test_a_wait_ended_in_a_group_that_rolled_back_is_resumed_by_a_later_event(store: SqlStore) -> None:
    # The group ends the wait (a cancel), then reads the name's paths: none open. The rollback opens
    # the wait again; had that read been remembered, no later event would look for it.
    item = waiting(store, "crm", "data.upload", "u1")
    with pytest.raises(RuntimeError, match="rolled back"), store.grouped():
        store.cancel_run(item.run_id, now_ms=T0 + 1)
        send(store, REVIEWED, T0 + 1, upload="other")
        raise RuntimeError("rolled back")
    assert wait_status(store, item) == StepStatus.WAITING
    send(store, REVIEWED, T0 + 2, upload="u1")
    assert wait_status(store, item) == StepStatus.COMPLETED


def test_a_batch_of_remembered_and_new_names_past_the_bound_starts_every_run(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(names, "MAX_NAMES", 2)
    store.register_functions("shop", [FunctionSpec("bill", ("a", "c"))], now_ms=T0)
    assert len(send(store, "a")) == 1
    assert send(store, "b") == ()
    batch = [NewEvent("a", "{}"), NewEvent("c", "{}")]
    assert len(store.ingest_events(batch, now_ms=T0 + 1).run_ids) == 2
    assert len(send(store, "b", T0 + 2)) == 0
