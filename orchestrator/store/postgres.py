"""PostgreSQL specifics (psycopg 3): a connection pool, advisory locks, retryable errors."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine, Executable, Table, create_engine, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

# Transaction-scoped advisory lock key shared by event ingest (exclusive) and wait registration
# (shared). Ingest holding it exclusively also makes events commit in seq order, so "max seq" read
# by a committing step is a watermark with no uncommitted gaps below it.
EVENTS_LOCK_KEY = 0x64757261626C65  # "durable"

# deadlock_detected, serialization_failure, lock_not_available
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03"})


class PostgresDialect:
    """PostgreSQL: many connections, row locks (FOR UPDATE [SKIP LOCKED]) and advisory locks."""

    name = "postgresql"
    max_concurrency = 8

    def create_engine(self, url: str) -> Engine:
        # pre_ping: a connection dropped by a database restart is replaced instead of failing a call.
        return create_engine(
            url, pool_size=self.max_concurrency, max_overflow=2, pool_pre_ping=True, pool_timeout=10
        )

    def lock_for_ingest(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": EVENTS_LOCK_KEY})

    def lock_for_wait_registration(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": EVENTS_LOCK_KEY})

    def upsert(self, table: Table, *, keys: Sequence[str], update: Sequence[str]) -> Executable:
        stmt = postgresql_insert(table)
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(keys))
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={name: stmt.excluded[name] for name in update}
        )

    def is_retryable(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) in RETRYABLE_SQLSTATES

    def is_unavailable(self, error: DBAPIError) -> bool:
        return isinstance(error, (OperationalError, InterfaceError)) or error.connection_invalidated
