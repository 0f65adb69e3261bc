"""The transaction context shared by the store's modules, and small helpers that work inside it.

Every ``store`` helper takes the caller's ``Tx`` and never commits: ``SqlStore`` owns the transaction.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Integer, bindparam, func, insert, literal_column, select, text, update
from sqlalchemy.engine import Connection

from orchestrator import errors, logs
from orchestrator.engine.model import ErrorInfo, EventRecord, RunState, RunStatus, StepStatus, WaitStatus
from orchestrator.store import prepared
from orchestrator.store import schema as t
from orchestrator.store.dialect import Dialect
from orchestrator.store.prepared import Prepared

logger = logging.getLogger("orchestrator.store")

# A row from a Core or a ``store.prepared`` statement: columns by attribute name.
AnyRow = Any


class Tx:
    """A transaction in progress: its connection (SQLAlchemy's, and the driver's under it for
    ``store.prepared`` statements), the dialect, the jitter source, the writes deferred to the next
    round trip, and the log lines to emit once it commits (so the log never tells of something that
    rolled back)."""

    def __init__(self, conn: Connection, dialect: Dialect, rng: random.Random) -> None:
        self._conn = conn
        self.sa_dialect = conn.dialect
        self.raw: Any = conn.connection.driver_connection
        self.driver_error: type[Exception] = conn.dialect.loaded_dbapi.Error
        self.dialect = dialect
        self.rng = rng
        # The instant this transaction decides with (``SqlStore._now``): the database's clock, read
        # once, where replicas share it; else the latest its calls were given.
        self.now_ms: int | None = None
        # Statements sent with the next statement that is read (``Prepared.run_later``; only where
        # the dialect pipelines): writes whose results nobody reads, and reads whose results go to
        # a callback once they arrive (``Prepared.read_later``).
        self.deferred: list[tuple[str, Any, Callable[[Any], None] | None]] = []
        # Statements sent after every other one, with the COMMIT, one per key (``Prepared.
        # run_at_commit``): the announcements of ready work, which look at what the transaction's
        # claims left.
        self.at_commit: dict[Any, tuple[str, Any]] = {}
        # False: this transaction must not act on per-process hints (``store.ingest``): its first
        # attempt did, and a guard found a hint stale (``Dialect.hint_was_stale``).
        self.use_hints = True
        # The event names this transaction acted on the hints of: forgotten if a guard refuses.
        self.hinted: set[str] = set()
        # Set by whoever runs the transaction when the call about to run is its last: its final
        # statement may then carry the COMMIT in the same round trip (a claim, ``leases``).
        self.last_call = False
        # True once a COMMIT was sent: nothing may run in this transaction any more.
        self.committed = False
        # SQLite (``store.names``): whether this transaction checked what its connection remembers
        # against other connections' commits, and whether it wrote functions.
        self.names_checked = False
        self.functions_written = False
        # PostgreSQL: whether this transaction's planner was set to the indexes (``plan_by_index``).
        self.planned_by_index = False
        # PostgreSQL: the runs an event ingested on hints starts, their insert not sent yet; and
        # whether an ingest ran in this transaction (only the first one's runs may be leased so).
        self.unsent_runs: UnsentRuns | None = None
        self.ingested = False
        self._logs: list[tuple[str, dict[str, Any]]] = []

    @property
    def conn(self) -> Connection:
        """SQLAlchemy's connection, for Core statements (the deferred writes are sent first, so
        whatever runs next sees them)."""
        if self.deferred:
            self.flush()
        return self._conn

    @property
    def bare_conn(self) -> Connection:
        """SQLAlchemy's connection, the deferred statements left unsent: for a statement whose
        place in the transaction does not matter (reading the database's clock)."""
        return self._conn

    def invalidate(self, exc: BaseException) -> None:
        """The connection is gone: the pool must not hand it out again."""
        self._conn.invalidate(exc)

    def flush(self) -> None:
        """Sends the deferred writes now, in one round trip."""
        if self.deferred:
            prepared.run_pipelined(self, [])

    def commit(self) -> None:
        """Commits: where the dialect pipelines, with the deferred writes in one round trip (the
        caller's SQLAlchemy transaction then finds nothing left to commit); elsewhere it leaves the
        commit to that transaction."""
        if self.dialect.pipelines and not self.committed:
            prepared.run_pipelined(self, [], commit=True)

    def log(self, what: str, /, **fields: Any) -> None:
        """Queues a structured log line for after the commit."""
        self._logs.append((what, fields))

    def log_mark(self) -> int:
        """A position in the queued log lines, for ``drop_logs``."""
        return len(self._logs)

    def drop_logs(self, mark: int) -> None:
        """Forgets the lines queued since ``mark`` (their work was rolled back)."""
        del self._logs[mark:]

    def flush_logs(self) -> None:
        """Emits the queued log lines (call after the commit)."""
        for what, fields in self._logs:
            logs.log(logger, what, **fields)
        self._logs.clear()


class UnsentRuns:
    """PostgreSQL: the runs a lone event ingested on hints starts (``store.ingest``), whose insert
    waits for the transaction's next round trip. Until it is sent, a claim in the same transaction
    (the one a parked poller left) may have them inserted leased to it (``lease``), rather than
    inserted ready and then updated by a claim statement: one row version instead of two, and one
    statement less in the round trip. The insert still leases none when a ready run the claim could
    take now is there already (read by the same statement): the oldest ready work goes first, as
    the claim would take it (a run another claim is taking at that moment counts too: the poller
    then claims again). Only while no other call of the group sent the statement first (anything
    that reads)."""

    def __init__(
        self,
        statement: prepared.Unsent,
        event: EventRecord,
        ready_ms: int,
        runs: tuple[tuple[str, tuple[str, str]], ...],
    ) -> None:
        self._statement = statement
        # The event, its seq unknown until the statement returns it.
        self.event = event
        # When the runs are ready: a claim deciding at an earlier instant takes none.
        self.ready_ms = ready_ms
        # Each run: (run id, (app id, function id)).
        self.runs = runs
        self.leasable = True  # one claim only
        # The runs a claim chose: (run id, function id); once sent, the ones the insert leased.
        self.chosen: list[tuple[str, str]] = []
        self.leased: list[tuple[str, str]] = []

    @staticmethod
    def unleased(runs: int) -> dict[str, Any]:
        """The statement's lease parameters for inserting every run ready."""
        return {
            "to_lease": [False] * runs, "lease_app": None, "lease_functions": [], "lease_now_ms": None,
            "lease_id": None, "lease_expires_ms": None, "worker_id": None,
        }  # fmt: skip

    def lease(
        self,
        app_id: str,
        function_ids: Sequence[str],
        max_items: int,
        now_ms: int,
        lease: tuple[str, int, str],
    ) -> bool:
        """Has up to ``max_items`` of its runs of ``app_id`` (of ``function_ids``; any when empty)
        inserted leased with ``lease`` (lease id, expiry, worker id), unless a ready run the claim
        would choose is older then; False when it has none for the claim (or was sent, or another
        claim took this)."""
        if not self.leasable or now_ms < self.ready_ms:
            return False
        self.leasable = False
        self.chosen = [
            (run_id, function_id)
            for run_id, (app, function_id) in self.runs
            if app == app_id and (not function_ids or function_id in function_ids)
        ][:max_items]
        if not self.chosen:
            return False
        chosen = {run_id for run_id, _ in self.chosen}
        lease_id, expires_ms, worker_id = lease
        return self._statement.rebind(
            to_lease=[run_id in chosen for run_id, _ in self.runs], lease_app=app_id,
            lease_functions=list(function_ids), lease_now_ms=now_ms, lease_id=lease_id,
            lease_expires_ms=expires_ms, worker_id=worker_id,
        )  # fmt: skip

    def sent(self, seq: int, leased_ids: Iterable[str] | None) -> None:
        """The statement's result arrived: the event's seq and the runs it leased."""
        self.leasable = False
        self.event = EventRecord(seq, self.event.id, self.event.name, self.event.data_json, self.event.ts_ms)
        leased = set(leased_ids or ())
        self.leased = [run for run in self.chosen if run[0] in leased]


def hash_value(value: str | None) -> str | None:
    """The indexed digest of a wait's match value."""
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


def error_info(row: AnyRow) -> ErrorInfo | None:
    """The error stored in a row's error_* columns, if any."""
    if row.error_name is None and row.error_message is None:
        return None
    return ErrorInfo(row.error_name or "", row.error_message or "", row.error_stack or "")


def error_columns(error: ErrorInfo) -> dict[str, str]:
    """An error as error_* column values."""
    return {"error_name": error.name, "error_message": error.message, "error_stack": error.stack}


def fixed_limit(rows: int) -> ColumnElement[int]:
    """A LIMIT written into the statement's text. SQLAlchemy binds ``.limit(n)`` as a parameter, and
    PostgreSQL's generic plan of a prepared statement, not knowing it, assumes a tenth of the rows
    are wanted: a ``LIMIT 1`` seek is costed like a scan, and the generic plan lost to planning each
    execution (with statistics, a step completion's UPDATE was planned at every execution, 0.31 ms
    each in the server's log; test_pg_generic_plans checks it is reused)."""
    return literal_column(str(int(rows)), Integer)


# The newest event seq: the watermark a committed step leaves on its run (see ``event_mark``).
# A seek on the primary key's far end (MAX() becomes one only where PostgreSQL's statistics say so).
NEWEST_SEQ = func.coalesce(
    select(t.events.c.seq).order_by(t.events.c.seq.desc()).limit(fixed_limit(1)).scalar_subquery(), 0
)

# PostgreSQL: the statements of a transaction plan by the indexes alone from here on (``SET LOCAL``:
# nothing of it outlives the transaction, reaches reads such as GetRun and ListRuns, or another
# client of the same server connection behind a pooler). Below a few dozen pages the planner's cost
# model prefers reading a table whole: a generic plan expects ten elements in an array parameter
# and prices a random read at four sequential ones, so on a young database (a few hundred runs,
# their few thousand steps) the claim's plan read runs and steps whole at every claim, for the one
# or two runs it leased: 0.5 ms of the server's time per claim against 0.19 by the indexes
# (measured after 200 runs of 10 steps; analyzed, it still read the runs, and the events once per
# run). Sent before the statements that need it (a claim, an event resuming waits on its hints),
# whose every table has an index to take.
PLAN_BY_INDEX = Prepared(text("SELECT set_config('enable_seqscan', 'off', true)"))


def plan_by_index(tx: Tx) -> None:
    """PostgreSQL: ``PLAN_BY_INDEX`` for the rest of the transaction, sent with its next round trip
    (once per transaction)."""
    if not tx.planned_by_index:
        PLAN_BY_INDEX.run_later(tx)
        tx.planned_by_index = True


_MAX_SEQ = Prepared(select(NEWEST_SEQ.label("seq")))
_EVENTS_BY_SEQ = Prepared(
    select(t.events).where(t.events.c.seq.in_(bindparam("seqs", expanding=True))), expanding=("seqs",)
)
_RUN_FOR_UPDATE = Prepared(select(t.runs).where(t.runs.c.id == bindparam("run_id")).with_for_update())
# A sleep whose time came: completed by the claim that hands its run out again, or by the
# completion of a sleep already over.
SLEEP_ELAPSED = Prepared(
    update(t.steps)
    .where(t.steps.c.run_id == bindparam("run_id"), t.steps.c.step_id == bindparam("step_id"))
    .values(status=StepStatus.COMPLETED, output="null", ended_ms=bindparam("ended_ms"))
)
_CANCEL_WAITS = Prepared(
    update(t.waits)
    .where(t.waits.c.run_id == bindparam("run_id"), t.waits.c.status == WaitStatus.WAITING)
    .values(status=WaitStatus.CANCELLED)
)
_INSERT_ATTEMPT = Prepared(
    insert(t.step_attempts).values(
        {
            name: bindparam(name)
            for name in (
                "run_id", "step_id", "attempt", "started_ms", "ended_ms", "failed", "lease_id",
                "error_name", "error_message", "error_stack",
            )
        }
    )
)


def max_seq(tx: Tx) -> int:
    """The newest event seq (0 when there is none)."""
    return int(_MAX_SEQ.run(tx).scalar() or 0)


def events_by_seq(tx: Tx, seqs: Iterable[int]) -> dict[int, EventRecord]:
    """Events by their seq."""
    rows = _EVENTS_BY_SEQ.run(tx, seqs=list(set(seqs)))
    return {row.seq: EventRecord(row.seq, row.id, row.name, row.data, row.ts_ms) for row in rows}


def locked_run(tx: Tx, run_id: str) -> AnyRow:
    """The run row, locked for this transaction (PostgreSQL); NotFound when there is none."""
    row = _RUN_FOR_UPDATE.run(tx, run_id=run_id).first()
    if row is None:
        raise errors.NotFound(f"run {run_id} not found")
    return row


def not_current(run: AnyRow, lease_id: str) -> errors.FailedPrecondition:
    """Why ``lease_id`` is not the run's current lease, as the error to raise."""
    if run.status == RunStatus.CANCELLED:
        return errors.RunEnded(f"run {run.id} was cancelled")
    if run.state == RunState.ENDED:
        return errors.RunEnded(f"run {run.id} already ended ({run.status})")
    if run.state == RunState.LEASED:
        return errors.StaleLease(f"lease {lease_id} is stale: the run was handed to another worker")
    return errors.StaleLease(
        f"lease {lease_id} is stale: it expired or was released, and run {run.id} will be handed out again"
    )


def cancel_waits(tx: Tx, run_id: str) -> None:
    """Closes the run's open waits."""
    _CANCEL_WAITS.run_later(tx, run_id=run_id)


def insert_attempt(
    tx: Tx,
    run_id: str,
    step_id: str,
    attempt: int,
    started_ms: int,
    ended_ms: int | None,
    lease_id: str | None,
    error: ErrorInfo | None,
) -> None:
    """Adds one attempt to a step's history (failed when ``error`` is given)."""
    _INSERT_ATTEMPT.run_later(
        tx,
        run_id=run_id,
        step_id=step_id,
        attempt=attempt,
        started_ms=started_ms,
        ended_ms=ended_ms,
        failed=error is not None,
        lease_id=lease_id,
        error_name=error.name if error else None,
        error_message=error.message if error else None,
        error_stack=error.stack if error else None,
    )
