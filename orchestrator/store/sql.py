"""``SqlStore``: the ``Store`` interface on SQLAlchemy Core, portable across SQLite and PostgreSQL.

Each public method is one transaction (``_run``); the work inside is done by helpers that take the
transaction (``store.txn.Tx``) and never commit, grouped by responsibility:

- ``store.ingest``: events, triggered runs, resuming waits; function registration
- ``store.leases``: claims, lease extension and release
- ``store.completions``: outcomes reported by workers
- ``store.runs``: inspection and cancellation
- ``store.timers``: due timers and the nearest deadline

Decisions (retries, transitions, matching) come from ``orchestrator.engine``.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TypeVar

from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InvalidRequestError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import StaticPool

from orchestrator import errors, logs
from orchestrator.engine.model import (
    ClaimResult,
    Completion,
    CompletionResult,
    FunctionSpec,
    IngestResult,
    NewEvent,
    RunFilter,
    RunView,
    TimerResult,
    Wakeups,
    ready_apps,
)
from orchestrator.store import completions, ingest, leases, migrate, runs, timers
from orchestrator.store.base import GroupAborted
from orchestrator.store.dialect import IDLE_WRITERS, READ_ONLY, Dialect
from orchestrator.store.txn import Tx, logger

T = TypeVar("T")
R = TypeVar("R")

# A transaction that lost a race (deadlock, serialization failure) is simply run again.
MAX_TX_ATTEMPTS: Final = 3


def _hints_refused(tx: Tx | None, exc: BaseException) -> bool:
    """Whether ``exc`` is a guard refusing what ``tx`` did on hints; if so they are forgotten."""
    if tx is None or not isinstance(exc, DBAPIError) or not tx.dialect.hint_was_stale(exc):
        return False
    ingest.forget_hints(tx.hinted)
    return True


class _Group:
    """The transaction of an open group commit, which the calls made inside it join."""

    def __init__(self, tx: Tx, *, savepoints: bool) -> None:
        self.tx = tx
        self._savepoints = savepoints
        # True when a call's savepoint could not be rolled back: the group must roll back whole.
        self.broken = False

    def run(self, work: Callable[[Tx], T]) -> T:
        tx = self.tx
        mark = tx.log_mark()
        if not self._savepoints:
            try:
                return work(tx)
            except errors.CommitOutcomeUnknown:
                raise  # the group may have committed: never replayed (see ``grouped``)
            except BaseException as exc:
                tx.drop_logs(mark)
                _hints_refused(tx, exc)  # if so, the calls replayed alone read first
                raise GroupAborted(f"a call failed inside a group commit: {exc!r}") from exc
        if self.broken or not tx.dialect.in_transaction(tx.raw):
            # The database rolled the whole transaction back (a full disk, an I/O error): a savepoint
            # now would open a transaction of its own, and commit this call alone when released.
            self.broken = True
            raise errors.StoreUnavailable("database unavailable: the group's transaction was rolled back")
        try:
            tx.raw.execute("SAVEPOINT store_call")
            try:
                result = work(tx)
            except BaseException:
                tx.drop_logs(mark)
                tx.raw.execute("ROLLBACK TO SAVEPOINT store_call")
                tx.raw.execute("RELEASE SAVEPOINT store_call")
                raise
            tx.raw.execute("RELEASE SAVEPOINT store_call")
        except tx.driver_error as exc:
            self.broken = True
            raise errors.StoreUnavailable(f"database unavailable: {exc}") from exc
        return result


class SqlStore:
    """The orchestrator's durable state in a SQL database (see ``orchestrator.store.base.Store``)."""

    def __init__(
        self, url: str, dialect: Dialect, *, rng: random.Random | None = None, db_clock: bool = True
    ) -> None:
        self._dialect = dialect
        # True: decisions use the database's clock where the dialect has a shared one (PostgreSQL),
        # so replicas agree on lease deadlines. False: the callers' ``now_ms`` (tests that drive time).
        self._db_clock = db_clock
        self._engine = dialect.create_engine(url)
        self._rng = rng or random.Random()
        self.url = url
        # An inline store's writes run on this one connection (no pool checkout per transaction),
        # one at a time: callers normally call from one thread, and the lock keeps others safe.
        self._writer: Connection | None = None
        self._writer_lock = threading.RLock()
        # Where the store begins write transactions itself (PostgreSQL), their connections stay
        # checked out between transactions, in autocommit mode, up to ``IDLE_WRITERS`` of them: a
        # pool checkout and return, switching the driver's autocommit on and back off, cost
        # 0.35-0.45 ms of Python per transaction on 2 cores (measured after an idle gap).
        self._idle_writers: list[Connection] = []
        self._idle_writers_lock = threading.Lock()
        # The group commit (``grouped``) open in each context, whose transaction its calls join: per
        # thread, and per greenlet where a group runs on the event loop (``cooperative``; each group
        # is a task of its own there, with a context of its own).
        self._group: contextvars.ContextVar[_Group | None] = contextvars.ContextVar(
            "orchestrator_store_group", default=None
        )

    @property
    def max_concurrency(self) -> int:
        return self._dialect.max_concurrency

    @property
    def inline(self) -> bool:
        return self._dialect.inline

    @property
    def cooperative(self) -> bool:
        return self._dialect.cooperative

    @property
    def inline_reads(self) -> bool:
        return self._dialect.inline and isinstance(self._engine.pool, StaticPool)

    @property
    def display_url(self) -> str:
        """The database URL without its password, for logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    def _unavailable(self, exc: DBAPIError) -> errors.StoreUnavailable | None:
        if self._dialect.is_unavailable(exc):
            return errors.StoreUnavailable(f"database unavailable: {exc.orig}")
        return None

    @contextlib.contextmanager
    def _connection(self, read_only: bool) -> Iterator[Connection]:
        if self._dialect.inline and not read_only:
            if self._writer is None:
                self._writer = self._engine.connect()
            try:
                yield self._writer
            except DBAPIError:
                # The connection may be unusable (a disk error): the next write opens another.
                self._drop_writer()
                raise
            return
        if not read_only and self._dialect.pipelines:
            with self._pipelined_writer() as conn:
                yield conn
            return
        with self._checkout() as conn:
            if read_only:
                conn.execution_options(**{READ_ONLY: True})
            yield conn

    @contextlib.contextmanager
    def _pipelined_writer(self) -> Iterator[Connection]:
        """A write connection where the store sends the BEGIN itself, with the transaction's
        first statements (``_tx``): the driver would BEGIN with a round trip of its own (psycopg
        syncs its pipeline after it), so the connection is in autocommit mode. An idle one is taken
        if the server did not close it meanwhile; it goes back only after a transaction that ended
        without an error (one that raised is returned to the pool, which rolls it back)."""
        conn: Connection | None = None
        while conn is None:
            with self._idle_writers_lock:
                idle = self._idle_writers.pop() if self._idle_writers else None
            if idle is None:
                conn = self._checkout()
                try:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                except BaseException:
                    conn.close()
                    raise
            elif self._idle_writer_usable(idle):
                conn = idle
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        with self._idle_writers_lock:
            kept = not (conn.invalidated or conn.closed) and len(self._idle_writers) < IDLE_WRITERS
            if kept:
                self._idle_writers.append(conn)
        if not kept:
            conn.close()

    def _idle_writer_usable(self, idle: Connection) -> bool:
        """Whether a kept write connection can serve; one that cannot is invalidated."""
        try:
            closed = self._dialect.closed_while_idle(idle.connection.driver_connection)
        except Exception:
            closed = True  # cannot tell: replaced as a closed one
        if not closed:
            return True
        with contextlib.suppress(Exception):
            idle.invalidate()
        return False

    def _replace_connections(self) -> None:
        """After a restart of the server every connection is dead: the pool's and the kept ones."""
        self._engine.dispose(close=False)
        self._forget_idle_writers()

    def _forget_idle_writers(self) -> None:
        """Closes the kept write connections (dead after a restart; at close, no longer wanted)."""
        with self._idle_writers_lock:
            idle, self._idle_writers = self._idle_writers, []
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.invalidate()

    def _checkout(self) -> Connection:
        """A pooled connection. The pool replaces one the server closed while it was idle (the
        dialect's checkout check), twice at most: a server still closing what it is handed is
        unavailable, not an internal error."""
        try:
            return self._engine.connect()
        except (DisconnectionError, InvalidRequestError) as exc:
            raise errors.StoreUnavailable(f"database unavailable: {exc}") from exc

    def _tx(self, conn: Connection, read_only: bool) -> Tx:
        """The transaction context on ``conn``; where the store begins write transactions itself
        (``_connection``), its BEGIN is the first statement it will send."""
        tx = Tx(conn, self._dialect, self._rng)
        if self._dialect.pipelines and not read_only:
            tx.deferred.append(("BEGIN", None, None))
        return tx

    def _drop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.invalidate()
                writer.close()

    def _run(self, work: Callable[[Tx], T], *, read_only: bool = False) -> T:
        group = self._group.get()
        if group is not None:  # inside ``grouped()`` in this context: join its transaction
            try:
                return group.run(work)
            except DBAPIError as exc:
                # Rolled back to its savepoint: reported as outside a group (a full disk is
                # UNAVAILABLE, not an internal error).
                unavailable = self._unavailable(exc)
                if unavailable is None:
                    raise
                raise unavailable from exc
        # A shared in-memory database has one connection: its reads take the writer's turn too.
        if self._dialect.inline and (not read_only or self.inline_reads):
            with self._writer_lock:
                return self._transaction(work, read_only=False)
        return self._transaction(work, read_only)

    def _transaction(self, work: Callable[[Tx], T], read_only: bool) -> T:
        attempt = 0
        use_hints = True
        while True:
            attempt += 1
            committing = False
            tx: Tx | None = None
            try:
                with self._connection(read_only) as conn, self._dialect.transaction(conn, read_only):
                    tx = self._tx(conn, read_only)
                    tx.use_hints = use_hints
                    tx.last_call = True  # the one call of this transaction
                    result = work(tx)
                    committing = True
                    tx.commit()
            except DBAPIError as exc:
                # Run again: a transaction that lost a race, or one whose connection turned out to be
                # gone (a database restart) before it committed anything. A commit whose connection
                # broke may or may not have happened: that is reported, never guessed.
                if exc.connection_invalidated:
                    # After a restart every pooled connection is dead: replace them all at once
                    # rather than finding each one out with a failed transaction.
                    self._replace_connections()
                if use_hints and _hints_refused(tx, exc):
                    use_hints = False  # nothing was committed: again, reading what it had guessed
                    continue
                again = self._dialect.is_retryable(exc) or (exc.connection_invalidated and not committing)
                if again and attempt < MAX_TX_ATTEMPTS:
                    continue
                raise self._mapped(exc) from exc
            except errors.CommitOutcomeUnknown:
                self._replace_connections()  # as above: the server is likely gone
                raise
            except errors.RaceLost:
                # A concurrent transaction changed what this one read before its lock (PostgreSQL's
                # READ COMMITTED): run again, on a fresh snapshot.
                if attempt < MAX_TX_ATTEMPTS:
                    continue
                raise
            except PoolTimeout as exc:
                # Every connection is busy (or being re-established after a restart): try later.
                raise errors.StoreUnavailable(f"database busy: {exc}") from exc
            tx.flush_logs()
            return result

    def _mapped(self, exc: DBAPIError) -> Exception:
        unavailable = self._unavailable(exc)
        return unavailable if unavailable is not None else exc

    @contextlib.contextmanager
    def grouped(self) -> Iterator[None]:
        """Group commit: the store calls made inside, in this context, share one transaction,
        committed at the exit. If the commit fails the error propagates and none of the calls took
        effect (so no caller may be told it did). Not reentrant.

        Inline stores (SQLite) run each call in a savepoint: one that raises leaves nothing behind
        and the others go on. Others (PostgreSQL, where a savepoint costs two round trips) do not:
        a call that raises aborts the group with ``GroupAborted`` (the transaction rolls back, and
        the caller replays the calls one by one).

        Why: a commit writes (SQLite: to the WAL, every page the transaction touched; PostgreSQL:
        and flushes) once per transaction; completions of many runs touch the same few pages."""
        if self._group.get() is not None:
            raise RuntimeError("grouped() is not reentrant")
        lock = self._writer_lock if self._dialect.inline else contextlib.nullcontext()
        try:
            with lock, self._connection(read_only=False) as conn, self._dialect.transaction(conn, False):
                group = _Group(self._tx(conn, read_only=False), savepoints=self._dialect.inline)
                token = self._group.set(group)
                try:
                    yield
                finally:
                    self._group.reset(token)
                if group.broken:
                    # Raised inside the transaction: it rolls back, partial work included.
                    raise errors.StoreUnavailable("database unavailable: a group commit was rolled back")
                try:
                    group.tx.commit()
                except DBAPIError as exc:
                    # A deferred write of one of the calls failed, so nothing was committed; which
                    # call wrote it is not known here. (A commit whose connection broke raises
                    # CommitOutcomeUnknown instead: reported, never replayed.)
                    _hints_refused(group.tx, exc)
                    raise GroupAborted(f"a deferred write failed: {exc}") from exc
        except errors.CommitOutcomeUnknown:
            # From the commit at the exit or from a call that sent it (``Tx.last_call``).
            self._replace_connections()
            raise
        except DBAPIError as exc:
            raise self._mapped(exc) from exc
        except PoolTimeout as exc:
            raise errors.StoreUnavailable(f"database busy: {exc}") from exc
        group.tx.flush_logs()

    def next_call_is_last(self, last: bool) -> None:
        """Inside ``grouped()``: whether the next call in this context is the group's last (its
        final statement may then carry the COMMIT, where the dialect pipelines)."""
        group = self._group.get()
        if group is not None:
            group.tx.last_call = last

    def create_schema(self) -> None:
        self.migrate()

    def migrate(self) -> tuple[str | None, str]:
        """Applies pending migrations (see ``store.migrate``); returns the revisions before and after."""
        try:
            before, after = migrate.upgrade(self._engine, self._dialect, url=self.display_url)
        except DBAPIError as exc:
            unavailable = self._unavailable(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise
        if before != after:
            logs.log(logger, "schema.migrated", before=before, after=after)
        return before, after

    def check_schema(self) -> None:
        """Refuses a database not at this code's revision (``serve --no-migrate``)."""
        try:
            migrate.check(self._engine, url=self.display_url)
        except DBAPIError as exc:
            unavailable = self._unavailable(exc)
            if unavailable is not None:
                raise unavailable from exc
            raise

    def close(self) -> None:
        self._forget_idle_writers()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._engine.dispose()
        self._dialect.close()

    def _now(self, tx: Tx, now_ms: int) -> int:
        if not self._db_clock:
            tx.now_ms = max(now_ms, tx.now_ms or now_ms)
            return now_ms
        # One instant per transaction, however many calls of a group commit ask: the database's
        # clock where replicas share one (PostgreSQL: ``postgres.DatabaseClock``), else the first
        # caller's.
        if tx.now_ms is None:
            tx.now_ms = self._dialect.now_ms(tx.bare_conn, now_ms)
        return tx.now_ms

    def _announcing(self, tx: Tx, result: R) -> R:
        """Announces the apps a write made ready to every replica (at commit); returns ``result``."""
        apps = ready_apps(result)
        if apps:
            self._dialect.notify_ready(tx, apps)
        return result

    @property
    def listens(self) -> bool:
        """Whether ``listen`` hears other replicas' announcements (PostgreSQL)."""
        return self._dialect.listens

    def listen(self, on_ready: Callable[[str | None], None], stop: threading.Event) -> None:
        """Blocks until ``stop``: calls ``on_ready(app_id)`` for every announcement of any replica
        (``None`` after connecting: any app may have work). Raises ``StoreUnavailable`` when the
        connection fails."""
        self._dialect.listen(self.url, on_ready, stop)

    def ingest_events(self, events: Sequence[NewEvent], *, now_ms: int) -> IngestResult:
        return self._run(lambda tx: self._announcing(tx, ingest.ingest(tx, events, self._now(tx, now_ms))))

    def register_functions(self, app_id: str, functions: Sequence[FunctionSpec], *, now_ms: int) -> None:
        self._run(lambda tx: ingest.register(tx, app_id, functions, self._now(tx, now_ms)))

    def claim_work(
        self,
        *,
        app_id: str,
        function_ids: Sequence[str],
        worker_id: str,
        max_items: int,
        now_ms: int,
        lease_ms: int,
    ) -> ClaimResult:
        return self._run(
            lambda tx: leases.claim(
                tx, app_id, function_ids, worker_id, max_items, self._now(tx, now_ms), lease_ms
            )
        )

    def complete_step(self, completion: Completion, *, now_ms: int, lease_ms: int) -> CompletionResult:
        return self._run(
            lambda tx: self._announcing(
                tx, completions.complete(tx, completion, self._now(tx, now_ms), lease_ms)
            )
        )

    def extend_lease(self, run_id: str, lease_id: str, *, now_ms: int, lease_ms: int) -> int:
        return self._run(lambda tx: leases.extend(tx, run_id, lease_id, self._now(tx, now_ms), lease_ms))

    def release_work(self, run_id: str, lease_id: str, *, now_ms: int) -> Wakeups:
        return self._run(
            lambda tx: self._announcing(tx, leases.release(tx, run_id, lease_id, self._now(tx, now_ms)))
        )

    def get_run(self, run_id: str) -> RunView:
        return self._run(lambda tx: runs.get_run(tx, run_id), read_only=True)

    def list_runs(self, run_filter: RunFilter) -> list[RunView]:
        return self._run(lambda tx: runs.list_runs(tx, run_filter), read_only=True)

    def cancel_run(self, run_id: str, *, now_ms: int) -> RunView:
        return self._run(lambda tx: runs.cancel(tx, run_id, self._now(tx, now_ms)))

    def fire_due_timers(self, *, now_ms: int, since_ms: int) -> TimerResult:
        # Not announced: every replica's scheduler finds the runs that became ready by itself.
        return self._run(lambda tx: timers.fire(tx, self._now(tx, now_ms), since_ms))

    def next_deadline_ms(self, *, now_ms: int) -> int | None:
        return self._run(lambda tx: timers.next_deadline(tx, self._now(tx, now_ms)), read_only=True)

    def queue_depth(self, *, now_ms: int) -> int:
        return self._run(lambda tx: timers.queue_depth(tx, self._now(tx, now_ms)), read_only=True)
