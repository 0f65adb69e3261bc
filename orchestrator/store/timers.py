"""Due timers: wait timeouts, lease expiry, ready times that passed; and the nearest deadline."""

from __future__ import annotations

from sqlalchemy import func, select, update

from orchestrator.engine import transitions
from orchestrator.engine.model import (
    RunState,
    StepKind,
    StepStatus,
    TimerResult,
    WaitStatus,
    Wakeups,
)
from orchestrator.store import ingest, lost
from orchestrator.store import schema as t
from orchestrator.store.txn import Tx

TIMER_BATCH = 500  # due rows handled per pass; the next pass follows at once when more are due


def fire(tx: Tx, now_ms: int, since_ms: int) -> TimerResult:
    """Times out due waits, expires due leases, and reports the apps whose runs became ready in
    ``(since_ms, now_ms]``."""
    w, r = t.waits, t.runs
    apps: set[str] = set()
    due_waits = tx.conn.execute(
        select(w.c.id, w.c.run_id, w.c.step_id)
        .where(w.c.status == WaitStatus.WAITING, w.c.expires_ms <= now_ms)
        .order_by(w.c.expires_ms)
        .limit(TIMER_BATCH)
        # Another replica firing the same timers takes other rows instead of queueing behind ours
        # (resolve_wait's conditional update would make it a no-op anyway: fired at most once).
        .with_for_update(skip_locked=True)
    ).all()
    timed_out = 0
    for wait in due_waits:
        app = ingest.resolve_wait(tx, wait.id, wait.run_id, wait.step_id, None, now_ms)
        if app is not None:
            apps.add(app)
            timed_out += 1
    expired = tx.conn.execute(
        select(r.c.id, r.c.app_id, r.c.worker_id, r.c.retries, r.c.lost_attempts)
        .where(r.c.state == RunState.LEASED, r.c.lease_expires_ms <= now_ms)
        .order_by(r.c.lease_expires_ms)
        .limit(TIMER_BATCH)
        .with_for_update(skip_locked=True)
    ).all()
    transitions.require(RunState.LEASED, RunState.READY)
    for run in expired:
        if _lost_attempts_exhaust_retries(tx, run.id, run.lost_attempts + 1, run.retries):
            if lost.fail_run(tx, run.id, run.lost_attempts + 1, now_ms):
                tx.log("lease.expired", run_id=run.id, worker_id=run.worker_id, run_failed=True)
            continue
        # The attempt in progress is lost with its worker: it counts (charged to the in-flight
        # step by the run's next outcome), unlike a clean ReleaseWork.
        done = tx.conn.execute(
            update(r)
            .where(r.c.id == run.id, r.c.state == RunState.LEASED, r.c.lease_expires_ms <= now_ms)
            .values(
                state=RunState.READY,
                available_at_ms=now_ms,
                lease_id=None,
                lease_expires_ms=None,
                worker_id=None,
                lost_attempts=r.c.lost_attempts + 1,
            )
        )
        if done.rowcount == 1:
            apps.add(run.app_id)
            tx.log(
                "lease.expired", run_id=run.id, worker_id=run.worker_id, lost_attempts=run.lost_attempts + 1
            )
    became_ready = tx.conn.scalars(
        select(r.c.app_id)
        .where(
            r.c.state == RunState.READY,
            r.c.available_at_ms > since_ms,
            r.c.available_at_ms <= now_ms,
        )
        .distinct()
    )
    apps.update(became_ready)
    return TimerResult(
        timed_out_waits=timed_out,
        expired_leases=len(expired),
        wakeups=Wakeups(ready_apps=frozenset(apps)),
    )


def _lost_attempts_exhaust_retries(tx: Tx, run_id: str, lost_attempts: int, retries: int) -> bool:
    """Whether handing the run out again could start user code a (retries+2)th time.

    The code that was in flight is the first step not yet completed (determinism): a step retrying
    after failures if there is one, else a step not recorded yet or code outside steps, whose
    attempts so far are only the lost ones. Conservative: a worker that died while replaying
    memoized steps, or before a sleep or a wait, is charged too."""
    s = t.steps
    failed = tx.conn.scalar(
        select(s.c.failed_attempts).where(
            s.c.run_id == run_id, s.c.kind == StepKind.RUN, s.c.status == StepStatus.RUNNING
        )
    )
    return int(failed or 0) + lost_attempts > retries


def queue_depth(tx: Tx, now_ms: int) -> int:
    """How many runs are ready to be handed out now (for the queue-depth metric)."""
    r = t.runs
    count = tx.conn.scalar(
        select(func.count()).select_from(r).where(r.c.state == RunState.READY, r.c.available_at_ms <= now_ms)
    )
    return int(count or 0)


def next_deadline(tx: Tx, now_ms: int) -> int | None:
    """The nearest future deadline: a ready time, a lease expiry or a wait timeout."""
    w, r = t.waits, t.runs
    candidates = [
        tx.conn.scalar(
            select(func.min(r.c.available_at_ms)).where(
                r.c.state == RunState.READY, r.c.available_at_ms > now_ms
            )
        ),
        tx.conn.scalar(select(func.min(r.c.lease_expires_ms)).where(r.c.state == RunState.LEASED)),
        tx.conn.scalar(select(func.min(w.c.expires_ms)).where(w.c.status == WaitStatus.WAITING)),
    ]
    deadlines = [int(c) for c in candidates if c is not None]
    return min(deadlines) if deadlines else None
