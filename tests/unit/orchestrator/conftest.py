"""Fixtures for the orchestrator's unit and integration tests.

``store`` is a real ``SqlStore`` on this test's database (``db_url`` from ``tests/conftest.py``): a
SQLite file in the test's tmp dir, and a fresh PostgreSQL database (the test runs once on each).
``observer`` is an engine of the test's own on that database (another connection: it sees only what
is committed); ``admin`` the same in autocommit mode, for statements about other sessions.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine

from orchestrator.store import factory, ingest
from orchestrator.store.sql import SqlStore


@pytest.fixture(autouse=True)
def no_hints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts with no ingest hints: they are per process (``store.ingest._Hints``), and
    another test's database left some under the same event names. A store call made inside a group
    by hand on a stale one raises ``GroupAborted``, which only a ``GroupCommitter`` replays: such a
    test failed or passed by the order the tests ran in."""
    for hints in ("_HINTS", "_TRIGGER_HINTS", "_WAIT_APP_HINTS"):
        monkeypatch.setattr(ingest, hints, ingest._Hints())


@pytest.fixture
def postgres_schema_url(postgres_db_url: str) -> str:
    """A fresh PostgreSQL database for PostgreSQL-only tests (the name predates per-test databases)."""
    return postgres_db_url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A store with its schema, on each database; deterministic jitter; time driven by the tests'
    ``now_ms`` (also on PostgreSQL, which would otherwise use its own clock: see test_replicas)."""
    opened = factory.open_store(db_url, rng=random.Random(7), db_clock=False)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def observer(store: SqlStore) -> Iterator[Engine]:
    """Another connection's view of the store's database."""
    engine = create_engine(store.url)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def admin(store: SqlStore) -> Iterator[Engine]:
    """An autocommit engine on the store's database."""
    engine = create_engine(store.url, isolation_level="AUTOCOMMIT")
    try:
        yield engine
    finally:
        engine.dispose()
