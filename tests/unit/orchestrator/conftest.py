"""Fixtures for the orchestrator's unit and integration tests.

``store`` is a real ``SqlStore``: on a SQLite file in the test's tmp dir, and also on PostgreSQL
(a fresh schema per test) when ``ORCHESTRATOR_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orchestrator import config
from orchestrator.store import factory
from orchestrator.store.sql import SqlStore

POSTGRES_ENV = "ORCHESTRATOR_TEST_POSTGRES_URL"


def _postgres_url() -> str | None:
    url = os.environ.get(POSTGRES_ENV)
    return config.normalize_db_url(url) if url else None


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    url = _postgres_url()
    if url is None:
        pytest.skip(f"{POSTGRES_ENV} not set")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield (
            make_url(url)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orchestrator.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    """A store with its schema, on each database; deterministic jitter."""
    opened = factory.open_store(db_url, rng=random.Random(7))
    try:
        yield opened
    finally:
        opened.close()
