"""Attempts lost with their workers: a lease that expires while user code ran counts as an attempt.

Lease expiry adds one to ``runs.lost_attempts``; the run's next outcome charges them to the step
that was in flight (by determinism, the first step not yet completed) and resets the counter, so a
step's user code starts at most ``retries + 1`` times, counting the executions dead workers began."""

from __future__ import annotations

from sqlalchemy import select, update

from orchestrator.engine import transitions
from orchestrator.engine.model import ErrorInfo, LostAttempts, RunState, RunStatus, StepKind, StepStatus
from orchestrator.store import schema as t
from orchestrator.store import txn
from orchestrator.store.txn import Tx

LOST = ErrorInfo("AttemptLost", "the worker stopped responding during the attempt (lease expired)")


def record(
    tx: Tx, run_id: str, step_id: str, first_attempt: int, count: int, at_ms: int
) -> tuple[LostAttempts, ...]:
    """Adds ``count`` failed attempts, numbered from ``first_attempt``, to a step's history; returns
    what it recorded (nothing when ``count`` is 0), for their spans.

    When a lost attempt began and ended is unknown (its worker never reported), so it is dated
    ``at_ms``: the start of the attempt that followed it, or the expiry that failed the run."""
    if count == 0:
        return ()
    for attempt in range(first_attempt, first_attempt + count):
        tx.conn.execute(
            t.step_attempts.insert().values(
                run_id=run_id,
                step_id=step_id,
                attempt=attempt,
                started_ms=at_ms,
                ended_ms=at_ms,
                failed=True,
                lease_id=None,
                **txn.error_columns(LOST),
            )
        )
    return (LostAttempts(run_id, step_id, first_attempt, count, at_ms, LOST),)


def exhausted_error(error: ErrorInfo, lost: int) -> ErrorInfo:
    """The final error of a step that failed after losing attempts, saying so."""
    if lost == 0:
        return error
    return ErrorInfo(error.name, f"{error.message} ({lost} attempts lost with their workers)", error.stack)


def fail_run(tx: Tx, run_id: str, lost: int, now_ms: int) -> tuple[bool, tuple[LostAttempts, ...]]:
    """Ends a run whose lease expired and whose in-flight code has no attempt left.

    The retrying step, if any, records the lost attempts and fails with the run. Returns whether the
    run was still leased and so failed now (a conditional update: a concurrent completion may have
    let it go), and the lost attempts recorded."""
    r, s = t.runs, t.steps
    transitions.require(RunState.LEASED, RunState.ENDED)
    error = ErrorInfo(LOST.name, f"{lost} attempts lost with their workers (leases expired): {LOST.message}")
    ended = tx.conn.execute(
        update(r)
        .where(r.c.id == run_id, r.c.state == RunState.LEASED, r.c.lease_expires_ms <= now_ms)
        .values(
            state=RunState.ENDED,
            status=RunStatus.FAILED,
            lease_id=None,
            lease_expires_ms=None,
            worker_id=None,
            lost_attempts=0,
            ended_ms=now_ms,
            **txn.error_columns(error),
        )
    )
    if ended.rowcount != 1:
        return False, ()
    txn.cancel_waits(tx, run_id)
    step = tx.conn.execute(
        select(s.c.step_id, s.c.failed_attempts).where(
            s.c.run_id == run_id, s.c.kind == StepKind.RUN, s.c.status == StepStatus.RUNNING
        )
    ).first()
    recorded: tuple[LostAttempts, ...] = ()
    if step is not None:
        recorded = record(tx, run_id, step.step_id, step.failed_attempts, lost, now_ms)
        tx.conn.execute(
            update(s)
            .where(s.c.run_id == run_id, s.c.step_id == step.step_id)
            .values(
                status=StepStatus.FAILED,
                failed_attempts=step.failed_attempts + lost,
                ended_ms=now_ms,
                **txn.error_columns(error),
            )
        )
    tx.log("run.failed", run_id=run_id, error=error.name, message=error.message)
    return True, recorded
