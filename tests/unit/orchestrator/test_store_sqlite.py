"""SQLite only: the WAL is copied back into the database file by a thread of the store, never by a
commit (SQLite's automatic checkpoint runs inside the commit that crosses its threshold, which then
takes ten times as long: every p99 of the latency shapes), and that thread ends with the store."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.engine.model import FunctionSpec, NewEvent
from orchestrator.store import factory, sqlite
from orchestrator.store.sql import SqlStore
from tests.support.waiting import wait_until

pytestmark = pytest.mark.sqlite_only("the WAL and its checkpoints are SQLite's")

T0 = 1_800_000_000_000


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
