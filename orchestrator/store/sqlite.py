"""SQLite specifics: connection pragmas, immediate transactions, a single writer thread."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Engine, Executable, Table, create_engine, event
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool

from orchestrator.store import names
from orchestrator.store.dialect import READ_ONLY

if TYPE_CHECKING:
    from orchestrator.store.txn import Tx

BUSY_TIMEOUT_MS = 5_000
# Copying the WAL back into the database file (a checkpoint) is done by a thread of the store
# (``_Checkpointer``), not by the commits: SQLite's automatic checkpoint runs inside the commit
# that crosses its threshold (1,000 pages, every 80 or so events here), and that commit took 10-16
# ms instead of about 1 (measured: p99 of a SendEvent's transaction 12.6 ms, 1.6 ms without). The
# writer's own automatic checkpoint stays, far above what the thread lets the WAL reach: a bound on
# the WAL should the thread ever fall behind.
WRITER_AUTOCHECKPOINT_PAGES = 20_000
# Between the thread's checkpoints: after one that found a long WAL, and otherwise.
CHECKPOINT_BUSY_S = 0.02
CHECKPOINT_IDLE_S = 0.25
CHECKPOINT_BUSY_FRAMES = 1_000

logger = logging.getLogger("orchestrator.store")


def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" hook below issue BEGIN itself: the sqlite3 module's implicit
    # transactions would begin lazily (DEFERRED), too late to take the write lock up front.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # Another process on the same file (a second orchestrator, a SQL shell) makes us wait for
        # its lock instead of failing at once with "database is locked". First: switching to WAL
        # below needs a lock too, contended when several processes open a new file together.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # WAL: readers do not block the writer and vice versa, and commits are appends (fast).
        _switch_to_wal(cursor)
        # NORMAL is durable against process crashes in WAL mode (only an OS crash or power loss
        # can drop the newest commits) and avoids an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # SQLite ignores foreign keys unless asked, per connection.
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _leave_checkpoints_to_the_thread(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    """Where the store's thread checkpoints the WAL (``_Checkpointer``): a commit does so only past
    ``WRITER_AUTOCHECKPOINT_PAGES``."""
    dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the file is locked: on a new file opened by
    several connections at once (replicas starting together) SQLite can answer "database is locked"
    at once, without calling the busy handler (seen in 9 of 60 tries with three threads). The mode
    is stored in the file, so only the first connection to a new file switches it."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _on_begin(conn: Connection) -> None:
    # Straight to the driver: this runs for every transaction, and a statement of our own needs none
    # of what executing through SQLAlchemy would add.
    driver = cast(sqlite3.Connection, conn.connection.driver_connection)
    if driver.in_transaction:
        # A Core statement inside a write transaction begun on the driver (``_write_transaction``):
        # SQLAlchemy begins its own bookkeeping, the database's transaction is already open.
        return
    # A reader takes no lock: in WAL mode it reads a snapshot while the writer goes on. A writer says
    # IMMEDIATE, which takes the write lock at BEGIN: a transaction that reads then writes can never
    # fail half-way on a lock upgrade, and busy_timeout applies to acquiring it.
    statement = "BEGIN" if conn.get_execution_options().get(READ_ONLY) else "BEGIN IMMEDIATE"
    _execute(driver, statement)


def _execute(driver: sqlite3.Connection, statement: str) -> None:
    try:
        driver.execute(statement)
    except sqlite3.Error as exc:
        # As SQLAlchemy would have raised it (the store maps DBAPIError to UNAVAILABLE).
        raise DBAPIError.instance(statement, (), exc, sqlite3.Error) from exc


@contextlib.contextmanager
def _write_transaction(conn: Connection) -> Iterator[None]:
    """A write transaction begun and ended on the driver: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK
    when the block raises. SQLAlchemy's ``conn.begin()`` and its commit cost 0.13 ms more per
    transaction after an idle gap here (0.26 ms against 0.13, measured around a one-row insert), and
    every SendEvent, claim and step completion is one. Where a Core statement ran inside,
    SQLAlchemy's own transaction began too (``_on_begin`` sent nothing): it is closed after, with
    nothing left for it to send."""
    # Both taken now: once the connection is invalidated, ``conn.connection`` raises.
    proxied = conn.connection
    driver = cast(sqlite3.Connection, proxied.driver_connection)
    info = proxied.info
    _execute(driver, "BEGIN IMMEDIATE")
    try:
        yield
        _execute(driver, "COMMIT")
    except BaseException:
        # What the connection remembers of event names may rest on what this transaction read.
        names.forget(info)
        # Also after a COMMIT that failed: SQLite may have left the transaction open (a busy
        # database) or rolled it back itself (a full disk).
        try:
            if driver.in_transaction:
                _execute(driver, "ROLLBACK")
        finally:
            if conn.in_transaction():
                conn.rollback()
        raise
    if conn.in_transaction():
        conn.commit()


class _Checkpointer:
    """Copies the WAL back into the database file from a thread of its own, with a connection of
    its own: a PASSIVE checkpoint, which waits for no reader and no writer (commits go on
    appending to the WAL meanwhile, and the writer starts the WAL over once everything in it was
    copied). The sqlite3 module lets other threads run while SQLite works."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpointer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        pause = CHECKPOINT_IDLE_S
        seen = 0  # the WAL's frames at the previous checkpoint
        try:
            while not self._stop.wait(pause):
                pause = CHECKPOINT_IDLE_S
                try:
                    if conn is None:
                        if not Path(self._path).exists():
                            continue  # not created yet (mode=rw would fail; a plain open would create it)
                        uri = f"file:{urllib.parse.quote(self._path)}?mode=rw"
                        conn = sqlite3.connect(uri, uri=True, timeout=0.1, isolation_level=None)
                    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    # ``frames`` counts the whole WAL until a write starts it over: busy is what
                    # was written since the last turn (a WAL started over counts from zero) or
                    # what is still to copy.
                    written = frames - seen if frames >= seen else frames
                    seen = frames
                    if max(written, frames - copied) >= CHECKPOINT_BUSY_FRAMES:
                        pause = CHECKPOINT_BUSY_S
                except sqlite3.Error as exc:
                    # A busy database, a file being replaced: the next turn tries again.
                    logger.debug("WAL checkpoint skipped: %s", exc)
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class SqliteDialect:
    """SQLite: one file, one writer. Writes run on the caller's thread (the event loop): a local
    transaction of a few statements costs less than handing it to a thread, and running them all on
    one thread serialises wait registration against event ingest without any lock of our own.
    Reads that may be long (GetRun, ListRuns) run on a thread of their own, on another connection."""

    name = "sqlite"
    max_concurrency = 1
    inline = True
    cooperative = False
    pipelines = False  # in-process: there is no round trip to save

    def __init__(self) -> None:
        self._checkpointer: _Checkpointer | None = None

    def create_engine(self, url: str) -> Engine:
        parsed = make_url(url)
        database = parsed.database
        kwargs: dict[str, Any] = {}
        if database in (None, "", ":memory:"):
            # One shared connection, or every connection would see its own empty database (and so
            # reads share the writer's thread too: see ``SqlStore.inline_reads``).
            kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": BUSY_TIMEOUT_MS / 1000}
            # The file the engine opens (SQLAlchemy makes the path absolute as it creates the
            # engine); a URI filename (``?uri=true``) is left to SQLite's own checkpoints.
            if self._checkpointer is None and parsed.query.get("uri") != "true":
                self._checkpointer = _Checkpointer(os.path.abspath(database))
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _on_connect)
        if self._checkpointer is not None:
            event.listen(engine, "connect", _leave_checkpoints_to_the_thread)
        event.listen(engine, "begin", _on_begin)
        return engine

    def transaction(self, conn: Connection, read_only: bool) -> AbstractContextManager[Any]:
        """Writes: the driver's own (``_write_transaction``). Reads (on connections of their own,
        a snapshot without the write lock): SQLAlchemy's, begun by ``_on_begin``."""
        return conn.begin() if read_only else _write_transaction(conn)

    def in_transaction(self, driver_connection: Any) -> bool:
        """False after SQLite rolled a transaction back by itself (SQLITE_FULL, SQLITE_IOERR...)."""
        return bool(driver_connection.in_transaction)

    def lock_for_ingest(self, tx: Tx, names: Sequence[str] = ()) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the database's only write lock."""

    def lock_for_wait_registration(self, tx: Tx, name: str = "") -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the database's only write lock."""

    def now_ms(self, conn: Connection, local_ms: int) -> int:
        """The caller's clock: SQLite serves one orchestrator process, so there is no other to agree with."""
        return local_ms

    def notify_ready(self, tx: Tx, app_ids: Iterable[str]) -> None:
        """Nothing to do: only this process's pollers wait on this database (woken in memory)."""

    def pipeline(self, driver_connection: Any, statements: list[tuple[str, Any]]) -> list[Any]:
        raise NotImplementedError("SQLite runs each statement in-process (pipelines = False)")

    def closed_while_idle(self, driver_connection: Any) -> bool:
        return False  # an in-process database: nothing closes it but the store

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None

    listens = False

    def listen(self, url: str, on_ready: Callable[[str | None], None], stop: threading.Event) -> None:
        raise NotImplementedError("SQLite has no cross-process notifications")

    def lock_for_migrations(self, conn: Connection) -> None:
        """Nothing to do: BEGIN IMMEDIATE already holds the database's only write lock."""

    def upsert(self, table: Table, *, keys: Sequence[str], update: Sequence[str]) -> Executable:
        stmt = sqlite_insert(table)
        if not update:
            return stmt.on_conflict_do_nothing(index_elements=list(keys))
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={name: stmt.excluded[name] for name in update}
        )

    def is_retryable(self, error: DBAPIError) -> bool:
        return False

    def hint_was_stale(self, error: DBAPIError) -> bool:
        return False  # hints are only acted on where statements are pipelined

    def is_unavailable(self, error: DBAPIError) -> bool:
        # "database is locked", "unable to open database file", "disk I/O error", ...
        return isinstance(error, OperationalError)
