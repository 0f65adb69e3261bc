"""The transaction context shared by the store's modules, and small helpers that work inside it.

Every ``store`` helper takes the caller's ``Tx`` and never commits: ``SqlStore`` owns the transaction.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.engine import Connection

from orchestrator import errors, logs
from orchestrator.engine.model import ErrorInfo, EventRecord, RunState, RunStatus, WaitStatus
from orchestrator.store import schema as t
from orchestrator.store.dialect import Dialect

logger = logging.getLogger("orchestrator.store")

AnyRow = Row[*tuple[Any, ...]]


class Tx:
    """A transaction in progress: its connection, the dialect, the jitter source, and the log lines
    to emit once it commits (so the log never tells of something that rolled back)."""

    def __init__(self, conn: Connection, dialect: Dialect, rng: random.Random) -> None:
        self.conn = conn
        self.dialect = dialect
        self.rng = rng
        self._logs: list[tuple[str, dict[str, Any]]] = []

    def log(self, what: str, /, **fields: Any) -> None:
        """Queues a structured log line for after the commit."""
        self._logs.append((what, fields))

    def flush_logs(self) -> None:
        """Emits the queued log lines (call after the commit)."""
        for what, fields in self._logs:
            logs.log(logger, what, **fields)


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


def max_seq(tx: Tx) -> int:
    """The newest event seq (0 when there is none)."""
    return int(tx.conn.scalar(select(func.coalesce(func.max(t.events.c.seq), 0))) or 0)


def events_by_seq(tx: Tx, seqs: Iterable[int]) -> dict[int, EventRecord]:
    """Events by their seq."""
    e = t.events
    rows = tx.conn.execute(select(e).where(e.c.seq.in_(set(seqs))))
    return {row.seq: EventRecord(row.seq, row.id, row.name, row.data, row.ts_ms) for row in rows}


def locked_run(tx: Tx, run_id: str) -> AnyRow:
    """The run row, locked for this transaction (PostgreSQL); NotFound when there is none."""
    r = t.runs
    row = tx.conn.execute(select(r).where(r.c.id == run_id).with_for_update()).first()
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
    w = t.waits
    tx.conn.execute(
        update(w)
        .where(w.c.run_id == run_id, w.c.status == WaitStatus.WAITING)
        .values(status=WaitStatus.CANCELLED)
    )


def end_attempt(tx: Tx, run_id: str, step_id: str, now_ms: int) -> None:
    """Ends a step's open attempt (a sleep or a wait that completed)."""
    a = t.step_attempts
    tx.conn.execute(
        update(a)
        .where(a.c.run_id == run_id, a.c.step_id == step_id, a.c.ended_ms.is_(None))
        .values(ended_ms=now_ms)
    )


def insert_attempt(
    tx: Tx,
    run_id: str,
    step_id: str,
    attempt: int,
    started_ms: int,
    ended_ms: int | None,
    lease_id: str,
    error: ErrorInfo | None,
) -> None:
    """Adds one attempt to a step's history (failed when ``error`` is given)."""
    tx.conn.execute(
        insert(t.step_attempts).values(
            run_id=run_id,
            step_id=step_id,
            attempt=attempt,
            started_ms=started_ms,
            ended_ms=ended_ms,
            failed=error is not None,
            lease_id=lease_id,
            **(error_columns(error) if error else {}),
        )
    )
