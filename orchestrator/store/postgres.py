"""PostgreSQL specifics (psycopg 3): a connection pool, advisory locks, retryable errors."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg import generators, pq, sql, waiting
from psycopg._queries import (
    MAX_CACHED_STATEMENT_LENGTH,
    MAX_CACHED_STATEMENT_PARAMS,
    PostgresQuery,
    _query2pg_nocache,
)
from psycopg.abc import RV, PQGen
from psycopg.adapt import Transformer
from sqlalchemy import Connection, Engine, Executable, Table, bindparam, create_engine, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.util.concurrency import await_, in_greenlet

from orchestrator import errors
from orchestrator.engine.model import RunState
from orchestrator.store.dialect import BLOCK_LOOP_UNTIL, IDLE_WRITERS
from orchestrator.store.prepared import Prepared

if TYPE_CHECKING:
    from orchestrator.store.txn import Tx

# Event ordering (transaction-scoped advisory lock, exclusive, taken by every ingest): events commit in
# seq order, so "max seq" read by a committing step is a watermark with no uncommitted gap below it
# (the run's event mark). Wait registrations do not take it.
EVENTS_LOCK_KEY = 0x64757261626C65  # "durable"
# Namespace of the per-event-name advisory locks (two-int form: namespace, hashtext(name)): ingest
# holds the names it inserts exclusively, a wait registration its awaited name shared. So a wait's
# backlog scan and an event's lookup of open waits of the same name never both miss each other,
# while registrations never wait for ingest of other names (hash collisions only add waiting).
EVENT_NAME_LOCK_NAMESPACE = 0x6576  # "ev"
# Transaction-scoped advisory lock held while migrations run.
MIGRATIONS_LOCK_KEY = 0x6D696772617465  # "migrate"

# Channel of the "work may be ready for app X" notifications (payload: the app id).
NOTIFY_CHANNEL = "durable_work"
LISTEN_POLL_S = 1.0

DEFAULT_POOL_SIZE = 8

# clock_timestamp(), not now(): the instant the server reads it, not its transaction's start.
_CLOCK_SQL = "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
# How often the database's clock is read again (see ``DatabaseClock``).
CLOCK_RESYNC_S = 10.0
# A reading whose round trip took longer than this says little about when the server read its
# clock: it is kept only when the previous reading is older than ``CLOCK_STALE_S``.
CLOCK_MAX_RTT_NS = 5_000_000
CLOCK_STALE_S = 60.0
_EVENTS_LOCK = Prepared(text("SELECT pg_advisory_xact_lock(:key)"))
_NAME_LOCK = Prepared(text("SELECT pg_advisory_xact_lock(:ns, hashtext(:name))"))
# The usual SendEvent (one event name): both locks in one statement, taken left to right (the
# target list is evaluated in order), so in the same order as one at a time.
_EVENTS_AND_NAME_LOCK = Prepared(
    text("SELECT pg_advisory_xact_lock(:key), pg_advisory_xact_lock(:ns, hashtext(:name))")
)
_NAME_LOCK_SHARED = Prepared(text("SELECT pg_advisory_xact_lock_shared(:ns, hashtext(:name))"))
_NOTIFY = Prepared(text("SELECT pg_notify(:channel, :app)"))
# The announcement of an app's ready work, sent last in its transaction (``Prepared.run_at_commit``):
# only while a run of the app is ready now once the transaction's claims took theirs. A run a parked
# poller's claim took in the same transaction (a handoff) needs no other replica woken: measured,
# skipping a delivered notification made event -> first step 0.2-0.3 ms sooner (the listener's
# backend and thread, and the loop they wake, share the two cores with the rest).
# The probe is ordered by the claim index's last column rather than an EXISTS: a prepared statement
# runs a generic plan after five executions, and for EXISTS that plan is a sequential scan whenever
# the statistics say the app has many runs (it expects to stop at the first ready one). With no run
# ready, it read the whole table: 4-6 ms per SendEvent with 20,000 runs parked, once ANALYZE (or
# autovacuum) had run. Ordered, the only cheap plan is the index.
_NOTIFY_IF_READY = Prepared(
    text(
        "SELECT pg_notify(:channel, :app) WHERE (SELECT 1 FROM runs WHERE app_id = :app"
        " AND state = :ready AND available_at_ms <= :now_ms ORDER BY available_at_ms LIMIT 1) IS NOT NULL"
    ).bindparams(bindparam("ready", RunState.READY, literal_execute=False))
)
CONNECT_TIMEOUT_S = 5

# deadlock_detected, serialization_failure, lock_not_available, and unique_violation: a completion
# reads its run and step under the run's row lock, but in READ COMMITTED the step comes from the
# snapshot taken before the lock wait, so a concurrent repeat of the same completion can insert the
# step first; run again, it sees the step and answers as a duplicate.
# And invalid_sql_statement_name / feature_not_supported: a statement the store prepared on the
# connection is gone or no longer valid there (``_PREPARED_GONE``); its names were forgotten.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001", "55P03", "23505", "26000", "0A000"})
# division_by_zero: what a guard statement raises when a hint it checks is stale (``store.ingest``);
# no other statement of the store divides.
HINT_STALE_SQLSTATE = "22012"


class DatabaseClock:
    """The database server's clock, without a round trip per transaction.

    Every replica decides with the server's clock (lease deadlines, ready times, timeouts), so that
    they agree however their own clocks drift. Reading it per transaction (``now()``) cost one round
    trip on every SendEvent, PollWork and CompleteStep: about 0.3 ms each on an idle 2-core box,
    the largest single item after the commit. Instead the server's clock is read once every
    ``CLOCK_RESYNC_S`` and carried forward with this process's monotonic clock. The reading is
    placed at the middle of its round trip, so the estimate is off by at most half of it (well
    under a millisecond here), and the monotonic clock drifts by microseconds between readings.
    Values handed out never go backwards, so within a replica a later transaction never sees an
    earlier instant (a run made ready "now" is ready for the claim that follows).
    """

    def __init__(self, *, resync_s: float = CLOCK_RESYNC_S) -> None:
        self._resync_ns = int(resync_s * 1e9)
        self._lock = threading.Lock()
        # Server clock (us) at monotonic instant ``_base_mono`` (ns); None until the first reading.
        self._base_us: int | None = None
        self._base_mono = 0
        # Monotonic instant (ns) from which the next reading is due.
        self._due_mono = 0
        self._last_ms = 0

    def due(self) -> bool:
        """Whether the next caller should read the server's clock (first use, or it is time)."""
        return self._base_us is None or time.monotonic_ns() >= self._due_mono

    def sample(self, read_us: Callable[[], int]) -> None:
        """Reads the server's clock with ``read_us`` (its clock in us) and re-bases the estimate."""
        before = time.monotonic_ns()
        server_us = read_us()
        after = time.monotonic_ns()
        with self._lock:
            stale = self._base_us is None or after - self._base_mono >= int(CLOCK_STALE_S * 1e9)
            if after - before <= CLOCK_MAX_RTT_NS or stale:
                self._base_us, self._base_mono = server_us, (before + after) // 2
                self._due_mono = after + self._resync_ns
            else:
                self._due_mono = after + self._resync_ns // 10  # keep the base; read again sooner

    def now_ms(self) -> int:
        """The server's current instant (Unix ms), estimated; never less than a previous value."""
        with self._lock:
            assert self._base_us is not None, "sample() first"
            estimate = (self._base_us * 1000 + time.monotonic_ns() - self._base_mono) // 1_000_000
            self._last_ms = max(self._last_ms, estimate)
            return self._last_ms


@contextlib.contextmanager
def _store_sent_transaction(conn: Connection) -> Iterator[None]:
    """A write transaction whose BEGIN and COMMIT the store sends itself (``Tx``, ``prepared``).
    SQLAlchemy's ``conn.begin()`` around it sent nothing on an autocommit connection, and cost
    Python on the way in and out of every group commit. A block that raises leaves the rollback to
    the connection's return to the pool (``SqlStore._pipelined_writer`` closes it). Where a Core
    statement ran inside, SQLAlchemy began its own bookkeeping: it is closed after (nothing to send)."""
    yield
    if conn.in_transaction():
        conn.commit()


class PostgresDialect:
    """PostgreSQL: many connections, row locks (FOR UPDATE [SKIP LOCKED]) and advisory locks."""

    name = "postgresql"
    # Every statement is a network round trip: a transaction never blocks the loop for long, and
    # writes whose results nobody reads travel in a pipeline with the next statement.
    inline = False
    # Group commits run on the event loop and await the server there (``LoopConnection``), rather
    # than in threads: handing a lone call to a thread and its outcome back woke two idle cores
    # (measured, paired: 0.10-0.16 ms of a first step or a resume). Reads still go to threads.
    cooperative = True
    pipelines = True

    def __init__(self, *, pool_size: int | None = None) -> None:
        # One pooled connection per store thread; a couple more for the scheduler's bursts.
        self.max_concurrency = pool_size or DEFAULT_POOL_SIZE
        self.clock = DatabaseClock()

    def create_engine(self, url: str) -> Engine:
        # No pre-ping (a round trip per transaction): a pooled connection that the server closed
        # while it was idle (a restart, a terminated session) is found at checkout without one
        # (``_discard_if_closed``). One that breaks later fails its transaction's first round trip:
        # before anything was done, the store replaces it and runs the transaction again
        # (``SqlStore._transaction``); under a COMMIT, the outcome is reported unknown.
        # connect_timeout: while the server is down a call fails fast (UNAVAILABLE) instead of hanging.
        engine = create_engine(
            url,
            pool_size=self.max_concurrency,
            # Two for the scheduler's bursts, and room for the write connections the store keeps
            # between transactions (``dialect.IDLE_WRITERS``).
            max_overflow=2 + IDLE_WRITERS,
            pool_timeout=10,
            # psycopg prepares nothing itself: ``pipeline`` prepares every statement of the store
            # under names of its own, which psycopg's DEALLOCATE ALL (sent after a rollback once it
            # has prepared something) would drop.
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "prepare_threshold": None},
        )
        event.listen(engine, "checkout", _discard_if_closed)
        event.listen(engine, "do_connect", _connect)
        return engine

    def transaction(self, conn: Connection, read_only: bool) -> AbstractContextManager[Any]:
        """Reads: SQLAlchemy's. Writes: the store's own BEGIN and COMMIT, sent in its pipelines on a
        connection in autocommit mode (``SqlStore._pipelined_writer``), so nothing is wrapped around
        them here (``_store_sent_transaction``)."""
        return conn.begin() if read_only else _store_sent_transaction(conn)

    def pipeline(self, driver_connection: Any, statements: list[tuple[str, Any]]) -> list[Any]:
        return _pipeline(driver_connection, statements)

    def closed_while_idle(self, driver_connection: Any) -> bool:
        return _closed_while_idle(driver_connection)

    def close(self) -> None:
        """Nothing runs beside the store here (the listener belongs to the service)."""

    def in_transaction(self, driver_connection: Any) -> bool:
        """Whether a transaction is open (or failed and not yet rolled back) on the connection."""
        status = driver_connection.info.transaction_status
        return bool(status != psycopg.pq.TransactionStatus.IDLE)

    # The locks are deferred writes: they travel with the statements that follow them, which the
    # server runs after taking them.

    def lock_for_ingest(self, tx: Tx, names: Sequence[str] = ()) -> None:
        distinct = sorted(set(names))
        if len(distinct) == 1:
            (name,) = distinct
            _EVENTS_AND_NAME_LOCK.run_later(tx, key=EVENTS_LOCK_KEY, ns=EVENT_NAME_LOCK_NAMESPACE, name=name)
            return
        _EVENTS_LOCK.run_later(tx, key=EVENTS_LOCK_KEY)
        # Sorted: two ingests of overlapping names take them in one order and cannot deadlock.
        for name in distinct:
            _NAME_LOCK.run_later(tx, ns=EVENT_NAME_LOCK_NAMESPACE, name=name)

    def lock_for_wait_registration(self, tx: Tx, name: str = "") -> None:
        _NAME_LOCK_SHARED.run_later(tx, ns=EVENT_NAME_LOCK_NAMESPACE, name=name)

    def now_ms(self, conn: Connection, local_ms: int) -> int:
        # The database's clock, shared by every replica: leases, ready times and timeouts written by
        # one replica mean the same instant to the others. Estimated (``DatabaseClock``); when it is
        # read (every ``CLOCK_RESYNC_S``), it is a round trip of its own: in a write transaction
        # before its BEGIN (the connection is in autocommit mode until the store sends that), in a
        # read-only one inside the transaction the driver began.
        if self.clock.due():
            self.clock.sample(lambda: _read_clock_us(conn))
        return self.clock.now_ms()

    def notify_ready(self, tx: Tx, app_ids: Iterable[str]) -> None:
        # Delivered at commit (never for a rollback) to every replica's listener, itself included.
        for app_id in sorted(set(app_ids)):
            if tx.now_ms is None:  # no call said when: announce anyway
                _NOTIFY.run_at_commit(tx, ("notify", app_id), channel=NOTIFY_CHANNEL, app=app_id)
            else:
                _NOTIFY_IF_READY.run_at_commit(
                    tx, ("notify", app_id), channel=NOTIFY_CHANNEL, app=app_id, now_ms=tx.now_ms
                )

    listens = True

    def listen(self, url: str, on_ready: Callable[[str | None], None], stop: threading.Event) -> None:
        """Blocks until ``stop``: LISTENs on one dedicated connection and calls ``on_ready(app_id)``
        per notification, and ``on_ready(None)`` ("any app") once listening. Raises when the
        connection fails; the caller calls again, which listens again and rescans."""
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            with psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                on_ready(None)  # listening (again): what was announced while we were not is rescanned
                while not stop.is_set():
                    # Bounded wait so that ``stop`` is seen promptly; no query runs while idle.
                    for notify in conn.notifies(timeout=LISTEN_POLL_S):
                        on_ready(notify.payload)
        except (psycopg.Error, OSError) as exc:
            raise errors.StoreUnavailable(f"database unavailable (listener): {exc}") from exc

    def lock_for_migrations(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATIONS_LOCK_KEY})

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

    def hint_was_stale(self, error: DBAPIError) -> bool:
        return getattr(error.orig, "sqlstate", None) == HINT_STALE_SQLSTATE


class LoopConnection(psycopg.Connection[Any]):
    """A psycopg connection that waits for the server on the event loop when it is used from a
    greenlet there (a group commit, ``commits.GroupCommitter``, run by SQLAlchemy's
    ``greenlet_spawn``): every wait of the driver (a pipeline's send and reads, BEGIN, COMMIT) is
    awaited, so the loop serves RPCs meanwhile; or, until ``BLOCK_LOOP_UNTIL``, blocks it (a lone
    group on an idle loop: see ``commits``). Used from a thread, it blocks that thread as any
    connection does."""

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if not in_greenlet():
            return super().wait(gen, interval, timeout)
        until = BLOCK_LOOP_UNTIL.get()
        if until and timeout is None and (left := until - time.monotonic()) > 0:
            gen = _resumable(gen)
            try:
                return super().wait(gen, interval, left)
            except psycopg.errors._WaitTimeout:
                pass  # out of time: the rest is awaited
        return await_(waiting.wait_async(gen, self.pgconn.socket, interval=interval, timeout=timeout))


def _resumable(gen: PQGen[RV]) -> PQGen[RV]:
    """``gen``, such that a waiter that gave up on it can hand it to another: a waiter starts a
    generator with ``next()`` (it sends None), which this answers with what ``gen`` waits for
    still, rather than passing it on (a driver's waiter sends a Ready state, never None)."""
    try:
        state = next(gen)
        while True:
            ready = yield state
            if ready is not None:
                state = gen.send(ready)
    except StopIteration as done:
        return cast(RV, done.value)


def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> LoopConnection:
    """The pool's new connections are ``LoopConnection``s. One asked for on the loop (a group
    commit's) is made in a thread: connecting blocks (up to ``CONNECT_TIMEOUT_S``)."""
    connect = functools.partial(LoopConnection.connect, *cargs, **cparams)
    if in_greenlet():
        return await_(asyncio.get_running_loop().run_in_executor(None, connect))
    return connect()


def _read_clock_us(conn: Connection) -> int:
    """The server's clock (Unix us)."""
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    try:
        with driver.pipeline():
            cursor = driver.execute(_CLOCK_SQL)
        row = cursor.fetchone()
    except psycopg.Error as exc:
        gone = _disconnected(exc)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            _CLOCK_SQL, (), exc, psycopg.Error, connection_invalidated=gone, dialect=conn.dialect
        ) from exc
    assert row is not None
    return int(row[0])


def _discard_if_closed(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    """Pool checkout: a connection that the server closed while it sat idle in the pool is
    replaced, without a round trip (``_closed_while_idle``)."""
    if _closed_while_idle(dbapi_connection):
        raise DisconnectionError("the server closed the connection while it was idle")


def _closed_while_idle(dbapi_connection: Any) -> bool:
    """An idle connection has nothing to read; a readable one got the server's goodbye (the FATAL
    of a shutdown or a terminated session) or its end of file. Found before a transaction starts
    on it, the transaction goes to another connection: otherwise a write whose only round trip
    carries its COMMIT (a lone event on hints) could only report that commit's outcome as
    unknown."""
    if dbapi_connection.closed or dbapi_connection.pgconn.status != psycopg.pq.ConnStatus.OK:
        return True
    idle = select.poll()  # not select(): any descriptor number (a busy server has many)
    idle.register(dbapi_connection.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(idle.poll(0))


def _disconnected(exc: psycopg.Error) -> bool:
    """Whether the error means the connection is gone (the server restarted, the network broke)."""
    return isinstance(exc, psycopg.OperationalError) or exc.sqlstate is None


class _Session:
    """What ``_pipeline`` keeps per connection. ``prepared``: the statements it prepared there, by
    (SQL text, parameter types), and the name it gave each. A name is recorded once the server
    answered its Parse (a Parse in a pipeline that aborted before it never ran). Names are never
    reused, so a lost record costs a second Parse, never a wrong statement. At most
    ``MAX_PREPARED`` per connection (the store's hot statements come first; the rarer texts past
    them, such as long expansions of an IN list, go unnamed, planned each time). ``dumper``: the
    driver's converter of parameters, kept so that its per-type lookups are made once per
    connection rather than once per statement. Kept as an attribute of the connection
    (``_durable_session``): the converter refers to its connection, so a weak mapping from
    connection to session would never let either go."""

    __slots__ = ("prepared", "dumper")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.prepared: dict[Any, bytes] = {}
        self.dumper = Transformer.from_context(conn)


_SESSION_ATTRIBUTE = "_durable_session"
_NAMES = itertools.count()
MAX_PREPARED = 256
# What an Execute of a name answers when the server no longer has it as recorded (a DEALLOCATE,
# a pooler between, a plan whose result type changed under it): the connection's names are
# forgotten, and the transaction runs again (``RETRYABLE_SQLSTATES``).
_PREPARED_GONE = frozenset({"26000", "0A000"})

# A text's placeholders as psycopg reads them (``%(name)s`` -> ``$n``): the query's bytes, the
# formats wanted, the parameter order and the parts. psycopg caches this too, but keyed by the
# query's bytes: encoding and hashing the text (up to 2.4 KB here) at every execution is what
# this saves. Bounded in entries, and, as psycopg's own cache, in what it keeps: long texts and
# texts of many parameters (long expansions of an IN list) are read each time.
_PARSED: dict[tuple[str, str], Any] = {}
MAX_PARSED = 1024


def _parsed(text_: str, encoding: str) -> Any:
    key = (text_, encoding)
    got = _PARSED.get(key)
    if got is None:
        got = _query2pg_nocache(text_.encode(encoding), encoding)
        parts = got[3]
        if (
            len(_PARSED) < MAX_PARSED
            and len(text_) <= MAX_CACHED_STATEMENT_LENGTH
            and len(parts) - 1 <= MAX_CACHED_STATEMENT_PARAMS
        ):
            _PARSED[key] = got
    return got


class _Rows:
    """A statement's result, read as the store reads a driver's cursor (``rowcount``,
    ``statusmessage``, ``description``, ``fetchone``, ``fetchall``). Its rows are decoded at the
    first fetch, and most results (writes) are never fetched: a psycopg cursor per statement
    cost 35 us to build, every time."""

    __slots__ = ("_result", "_conn", "_rows", "_at", "rowcount")

    def __init__(self, result: pq.abc.PGresult, conn: psycopg.Connection[Any]) -> None:
        self._result = result
        self._conn = conn
        self._rows: list[tuple[Any, ...]] | None = None
        self._at = 0
        if result.status == pq.ExecStatus.TUPLES_OK:
            self.rowcount: int = result.ntuples
        else:
            tuples = result.command_tuples
            self.rowcount = tuples if tuples is not None else -1

    @property
    def statusmessage(self) -> str | None:
        status = self._result.command_status
        return status.decode() if status else None

    @property
    def description(self) -> list[tuple[str]] | None:
        result = self._result
        if result.status != pq.ExecStatus.TUPLES_OK:
            return None
        names = (result.fname(i) for i in range(result.nfields))
        return [((name or b"").decode(),) for name in names]

    def _loaded(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            if self._result.status != pq.ExecStatus.TUPLES_OK:
                raise psycopg.ProgrammingError("the statement returned no rows to fetch")
            # A converter of its own: the result may be read after its connection moved on.
            loader = Transformer.from_context(self._conn)
            loader.set_pgresult(self._result)
            self._rows = loader.load_rows(0, self._result.ntuples, tuple)
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._loaded()
        if self._at >= len(rows):
            return None
        self._at += 1
        return rows[self._at - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._loaded()
        rest, self._at = rows[self._at :], len(rows)
        return rest


def _round_trip(pgconn: pq.abc.PGconn, commands: int) -> PQGen[list[list[pq.abc.PGresult]]]:
    """Sends what the pipeline holds and reads a result list per command, then the Sync's: one
    wait of the driver for the whole round trip (each wait is a call through the connection, and
    after an idle gap every call counts). An empty read means libpq gave up on the connection (it
    would return nothing forever)."""
    yield from generators.send(pgconn)
    results: list[list[pq.abc.PGresult]] = []
    for _ in range(commands):
        got = yield from generators.fetch_many(pgconn)
        if not got or got[0].status == pq.ExecStatus.PIPELINE_SYNC:
            raise psycopg.OperationalError("lost synchronization with the server in a pipeline")
        results.append(got)
    got = yield from generators.fetch_many(pgconn)
    if not got or got[0].status != pq.ExecStatus.PIPELINE_SYNC:
        raise psycopg.OperationalError("lost synchronization with the server in a pipeline")
    return results


def _pipeline(conn: psycopg.Connection[Any], statements: list[tuple[str, Any]]) -> list[Any]:
    """Sends ``statements`` through libpq in one pipeline: each one's Parse (the first time on this
    connection) and Bind/Execute go into libpq's buffer, then one Sync and a flush; the results
    are read up to the Sync. psycopg's own pipeline polls, flushes and reads after every statement
    (a system call or three each): measured, paired samples, this way is 0.03-0.31 ms sooner to a
    first step and 0.16-0.44 ms to a resume (two round trips). Returns a result per statement
    (``_Rows``, read as a cursor); raises the first statement error once every result up to the
    Sync was read (the connection is then ready for a ROLLBACK). Parameters are converted before
    anything is sent, so a value the driver cannot send fails the call and leaves the connection as
    it was; a connection left mid-protocol (a send or a read failed) is closed, never used again."""
    pgconn = conn.pgconn
    session: _Session | None = getattr(conn, _SESSION_ATTRIBUTE, None)
    if session is None:
        session = _Session(conn)
        setattr(conn, _SESSION_ATTRIBUTE, session)
    prepared = session.prepared
    dumper = session.dumper
    encoding = conn.info.encoding
    # (text, query bytes, parameters, their types, their formats) per statement.
    converted: list[tuple[str, bytes, Any, tuple[int, ...], Any]] = []
    for text_, args in statements:
        if args is None:
            converted.append((text_, text_.encode(encoding), None, (), None))
            continue
        query, formats, order, parts = _parsed(text_, encoding)
        ordered = PostgresQuery.validate_and_reorder_params(parts, args, order)
        params = dumper.dump_sequence(ordered, formats)
        converted.append((text_, query, params, dumper.types or (), dumper.formats))
    # A Parse slot (its key and name) before each statement prepared now; None for an Execute.
    slots: list[tuple[Any, bytes] | None] = []
    parsing: dict[Any, bytes] = {}  # Parses queued in this pipeline
    conn.wait(conn._start_query())  # the driver's own BEGIN, where it begins transactions itself
    try:
        pgconn.enter_pipeline_mode()
        for text_, query, params, types, formats in converted:
            key = (text_, types)
            name = prepared.get(key) or parsing.get(key)
            if name is None and len(prepared) + len(parsing) < MAX_PREPARED:
                name = parsing[key] = b"_durable_%d" % next(_NAMES)
                pgconn.send_prepare(name, query, param_types=types)
                slots.append((key, name))
            if name is None:
                pgconn.send_query_params(query, params, param_types=types, param_formats=formats)
            else:
                pgconn.send_query_prepared(name, params, param_formats=formats)
            slots.append(None)
        pgconn.pipeline_sync()
        results = conn.wait(_round_trip(pgconn, len(slots)))
        pgconn.exit_pipeline_mode()
    except BaseException:
        conn.close()
        raise
    rows: list[Any] = []
    failed: psycopg.Error | None = None
    for slot, result in zip(slots, results, strict=True):
        status = result[0].status
        if status == pq.ExecStatus.FATAL_ERROR:
            error = psycopg.errors.error_from_result(result[0], encoding=encoding)
            if error.sqlstate in _PREPARED_GONE:
                prepared.clear()
            failed = failed or error
        elif slot is not None:
            if status == pq.ExecStatus.COMMAND_OK:  # not skipped by an earlier statement's error
                prepared[slot[0]] = slot[1]
        elif status != pq.ExecStatus.PIPELINE_ABORTED:
            rows.append(_Rows(result[0], conn))
    if failed is not None:
        raise failed
    return rows
