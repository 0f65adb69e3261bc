"""Opens the store for a database URL, picking the dialect from it."""

from __future__ import annotations

import random

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from orchestrator import config, errors
from orchestrator.store.dialect import Dialect
from orchestrator.store.postgres import PostgresDialect
from orchestrator.store.sql import SqlStore
from orchestrator.store.sqlite import SqliteDialect


def dialect_for(url: str) -> Dialect:
    """The dialect support for a SQLAlchemy URL (sqlite or postgresql)."""
    try:
        backend = make_url(url).get_backend_name()
    except ArgumentError as exc:
        raise errors.ConfigError(f"db_url: not a database URL: {url!r}") from exc
    if backend == "sqlite":
        return SqliteDialect()
    if backend == "postgresql":
        return PostgresDialect()
    raise errors.ConfigError(f"db_url: unsupported database {backend!r} (use sqlite or postgresql)")


def open_store(url: str, *, create_schema: bool = True, rng: random.Random | None = None) -> SqlStore:
    """A store on ``url`` (``postgresql://`` gets the psycopg driver), with its tables created."""
    url = config.normalize_db_url(url)
    store = SqlStore(url, dialect_for(url), rng=rng)
    if create_schema:
        try:
            store.create_schema()
        except BaseException:
            store.close()
            raise
    return store
