"""What the portable SQL store needs from a database dialect (implemented in ``store.sqlite`` and
``store.postgres``; no other module holds dialect-specific code)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Connection, Engine, Executable, Table
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from orchestrator.store.txn import Tx

# Execution option marking a connection whose transaction only reads (``SqlStore`` sets it), so a
# dialect can begin it without taking a write lock.
READ_ONLY = "orchestrator_read_only"
# Write connections ``SqlStore`` keeps between transactions where it begins them itself
# (``pipelines``): as many as group commits run at once (``commits.GROUPS_IN_FLIGHT``). The
# dialect's pool must have room for them beside one connection per store thread.
IDLE_WRITERS = 2
# Where a group commit runs on the event loop (``cooperative``): until this instant (time.monotonic()
# seconds) its waits for the server may block the loop rather than await; past it they await. Set
# by ``commits.GroupCommitter`` for a group that starts while no other runs (see there); 0: never.
BLOCK_LOOP_UNTIL: contextvars.ContextVar[float] = contextvars.ContextVar("block_loop_until", default=0.0)


class Dialect(Protocol):
    """Engine setup, concurrency and locking that differ between databases."""

    name: str
    # Threads that may run transactions at once.
    max_concurrency: int
    # True: write transactions are short and local, and run on the caller's thread (see ``Store.inline``).
    inline: bool
    # True: the driver's waits for the server can be awaited on the event loop, from a greenlet
    # (see ``Store.cooperative``).
    cooperative: bool
    # True: the driver can pipeline statements (send several, wait once): ``Prepared.run_later``.
    pipelines: bool

    def pipeline(self, driver_connection: Any, statements: list[tuple[str, Any]]) -> list[Any]:
        """Where ``pipelines``: sends ``statements`` (SQL in the driver's paramstyle, and its
        parameters) in one round trip and returns a result per statement, read as a driver's
        cursor (``rowcount``, ``statusmessage``, ``description``, ``fetchone``, ``fetchall``); raises
        the first statement's error (the driver's exception type; a parameter the driver cannot
        convert raises before anything is sent)."""
        ...

    def create_engine(self, url: str) -> Engine:
        """An engine configured for the orchestrator's access pattern."""
        ...

    def transaction(self, conn: Connection, read_only: bool) -> AbstractContextManager[Any]:
        """The transaction a store call (or a group of them) runs in on ``conn``: committed at the
        exit, rolled back when the block raises (SQLAlchemy's ``conn.begin()``, or the dialect's
        own on the driver)."""
        ...

    def close(self) -> None:
        """Stops what the dialect runs beside the store (SQLite: its WAL checkpoints)."""
        ...

    def closed_while_idle(self, driver_connection: Any) -> bool:
        """Whether a connection left idle was closed meanwhile by the server (a restart, a
        terminated session), found without a round trip."""
        ...

    # Whether ``listen`` can hear other processes' ``notify_ready`` (cross-replica wake-ups).
    listens: bool

    def in_transaction(self, driver_connection: Any) -> bool:
        """Whether the driver's connection is inside a transaction (the database may end one by
        itself after some errors)."""
        ...

    def lock_for_ingest(self, tx: Tx, names: Sequence[str] = ()) -> None:
        """Called first in every transaction that inserts events. Together with
        ``lock_for_wait_registration`` it makes event ingest and wait registration exclude each other,
        and it keeps event seqs committed in order, so a wait's "events after the mark" scan can
        never miss an event that committed late."""
        ...

    def lock_for_wait_registration(self, tx: Tx, name: str = "") -> None:
        """Called before a new wait on event ``name`` scans for already-received events and inserts
        its row."""
        ...

    def now_ms(self, conn: Connection, local_ms: int) -> int:
        """The instant a transaction decides with: the database's clock where replicas share it,
        else ``local_ms``."""
        ...

    def notify_ready(self, tx: Tx, app_ids: Iterable[str]) -> None:
        """Announces, at commit, that work for these apps may be ready (to every replica)."""
        ...

    def listen(self, url: str, on_ready: Callable[[str | None], None], stop: threading.Event) -> None:
        """Blocks until ``stop``, calling ``on_ready(app_id)`` per announcement (``None``: any app,
        after (re)connecting); raises when the connection fails."""
        ...

    def lock_for_migrations(self, conn: Connection) -> None:
        """Called first in the migration transaction: replicas starting together migrate one at a
        time, and each later one finds the schema already at the head revision."""
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

    def hint_was_stale(self, error: DBAPIError) -> bool:
        """A guard statement found that a transaction acted on a stale per-process hint (see
        ``store.ingest``): it rolled back, and runs again without hints."""
        ...
