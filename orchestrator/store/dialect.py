"""What the portable SQL store needs from a database dialect (implemented in ``store.sqlite`` and
``store.postgres``; no other module holds dialect-specific code)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection, Engine, Executable, Table
from sqlalchemy.exc import DBAPIError


class Dialect(Protocol):
    """Engine setup, concurrency and locking that differ between databases."""

    name: str
    # Threads that may run transactions at once.
    max_concurrency: int

    def create_engine(self, url: str) -> Engine:
        """An engine configured for the orchestrator's access pattern."""
        ...

    def lock_for_ingest(self, conn: Connection) -> None:
        """Called first in every transaction that inserts events. Together with
        ``lock_for_wait_registration`` it makes event ingest and wait registration exclude each other,
        and it keeps event seqs committed in order, so a wait's "events after the mark" scan can
        never miss an event that committed late."""
        ...

    def lock_for_wait_registration(self, conn: Connection) -> None:
        """Called before a new wait scans for already-received events and inserts its row."""
        ...

    def upsert(self, table: Table, *, keys: Sequence[str], update: Sequence[str]) -> Executable:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE SET update`` (DO NOTHING when ``update`` is
        empty); execute it with the rows as parameters."""
        ...

    def is_retryable(self, error: DBAPIError) -> bool:
        """The transaction lost a race (deadlock, serialization failure) and can simply rerun."""
        ...

    def is_unavailable(self, error: DBAPIError) -> bool:
        """The database cannot be reached or is busy: report UNAVAILABLE."""
        ...
