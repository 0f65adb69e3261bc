"""Opens the store for a database URL, picking the dialect from it."""

from __future__ import annotations

import random

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from orchestrator import config, errors
from orchestrator.store.dialect import Dialect
from orchestrator.store.sql import SqlStore
from orchestrator.store.sqlite import SqliteDialect


def dialect_for(url: str, *, pool_size: int | None = None) -> Dialect:
    """The dialect support for a SQLAlchemy URL (sqlite or postgresql)."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise errors.ConfigError(f"db_url: not a database URL: {url!r}") from exc
    if backend == "sqlite":
        return SqliteDialect()
    if backend == "postgresql":
        # Imported here: psycopg takes a seventh of a second to import, which SQLite never needs.
        from orchestrator.store.postgres import PostgresDialect

        return PostgresDialect(pool_size=pool_size)
    raise errors.ConfigError(f"db_url: unsupported database {backend!r} (use sqlite or postgresql)")


def open_store(
    url: str,
    *,
    create_schema: bool = True,
    rng: random.Random | None = None,
    pool_size: int | None = None,
    db_clock: bool = True,
) -> SqlStore:
    """A store on ``url`` (``postgresql://`` gets the psycopg driver). ``create_schema`` applies pending
    migrations; False only checks that the database is at this code's revision. ``db_clock=False``
    makes the store decide with the callers' ``now_ms`` even on PostgreSQL (tests that drive time)."""
    url = config.normalize_db_url(url)
    store = SqlStore(url, dialect_for(url, pool_size=pool_size), rng=rng, db_clock=db_clock)
    try:
        if create_schema:
            store.create_schema()
        else:
            store.check_schema()
    except BaseException:
        store.close()
        raise
    return store
