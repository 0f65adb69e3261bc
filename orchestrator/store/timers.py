"""Due timers: wait timeouts, lease expiry, ready times that passed; and the nearest deadline."""

from __future__ import annotations

from sqlalchemy import BigInteger, BindParameter, bindparam, func, select, text, update

from orchestrator.engine import transitions
from orchestrator.engine.model import (
    LostAttempts,
    RunState,
    StepKind,
    StepStatus,
    SuspensionEnded,
    TimerResult,
    Wakeups,
)
from orchestrator.store import ingest, lost, txn
from orchestrator.store import schema as t
from orchestrator.store.prepared import Prepared
from orchestrator.store.txn import Tx

TIMER_BATCH = 500  # due rows handled per pass; the next pass follows at once when more are due

_w, _r, _s = t.waits, t.runs, t.steps
_NOW: BindParameter[int] = bindparam("now_ms", type_=BigInteger)
_DUE_WAITS = Prepared(
    select(_w.c.id, _w.c.run_id, _w.c.step_id)
    .where(text(t.WAIT_OPEN), _w.c.expires_ms <= _NOW)  # literal: the partial index's predicate
    .order_by(_w.c.expires_ms)
    .limit(txn.fixed_limit(TIMER_BATCH))
    # Another replica firing the same timers takes other rows instead of queueing behind ours
    # (resolve_wait's conditional update would make it a no-op anyway: fired at most once).
    .with_for_update(skip_locked=True)
)
_EXPIRED_LEASES = Prepared(
    select(_r.c.id, _r.c.app_id, _r.c.worker_id, _r.c.retries, _r.c.lost_attempts)
    .where(_r.c.state == RunState.LEASED, _r.c.lease_expires_ms <= _NOW)
    .order_by(_r.c.lease_expires_ms)
    .limit(txn.fixed_limit(TIMER_BATCH))
    .with_for_update(skip_locked=True)
)
# The attempt in progress is lost with its worker: it counts (charged to the in-flight step by the
# run's next outcome), unlike a clean ReleaseWork.
_EXPIRE_LEASE = Prepared(
    update(_r)
    .where(_r.c.id == bindparam("run_id"), _r.c.state == RunState.LEASED, _r.c.lease_expires_ms <= _NOW)
    .values(
        state=RunState.READY,
        available_at_ms=_NOW,
        lease_id=None,
        lease_expires_ms=None,
        worker_id=None,
        lost_attempts=_r.c.lost_attempts + 1,
    )
)
_BECAME_READY = Prepared(
    select(_r.c.app_id)
    .where(
        _r.c.state == RunState.READY,
        _r.c.available_at_ms > bindparam("since_ms"),
        _r.c.available_at_ms <= _NOW,
    )
    .distinct()
)
_RETRYING_STEP_FAILURES = Prepared(
    select(_s.c.failed_attempts).where(
        _s.c.run_id == bindparam("run_id"), _s.c.kind == StepKind.RUN, _s.c.status == StepStatus.RUNNING
    )
)
_QUEUE_DEPTH = Prepared(
    select(func.count()).select_from(_r).where(_r.c.state == RunState.READY, _r.c.available_at_ms <= _NOW)
)
# The nearest deadlines, each one index seek: ORDER BY ... LIMIT 1 rather than MIN(), which
# PostgreSQL turns into the seek only when its statistics say it pays (without them, a plan cached
# while the table was small read every waiting row: 3 ms at 20,000 waits, on each timer pass).
_NEXT_READY = Prepared(
    select(_r.c.available_at_ms)
    .where(_r.c.state == RunState.READY, _r.c.available_at_ms > _NOW)
    .order_by(_r.c.available_at_ms)
    .limit(txn.fixed_limit(1))
)
_NEXT_LEASE_EXPIRY = Prepared(
    select(_r.c.lease_expires_ms)
    .where(_r.c.state == RunState.LEASED, _r.c.lease_expires_ms.is_not(None))
    .order_by(_r.c.lease_expires_ms)
    .limit(txn.fixed_limit(1))
)
_NEXT_WAIT_TIMEOUT = Prepared(
    select(_w.c.expires_ms).where(text(t.WAIT_OPEN)).order_by(_w.c.expires_ms).limit(txn.fixed_limit(1))
)


def fire(tx: Tx, now_ms: int, since_ms: int) -> TimerResult:
    """Times out due waits, expires due leases, and reports the apps whose runs became ready in
    ``(since_ms, now_ms]``."""
    apps: set[str] = set()
    timed_out = 0
    ended: list[SuspensionEnded] = []
    for wait in _DUE_WAITS.run(tx, now_ms=now_ms).all():
        resolved = ingest.resolve_wait(tx, wait.id, wait.run_id, wait.step_id, None, now_ms)
        if resolved is not None:
            ended.append(resolved.ended)
        if resolved is not None and resolved.app_id is not None:
            apps.add(resolved.app_id)
            timed_out += 1
    expired = _EXPIRED_LEASES.run(tx, now_ms=now_ms).all()
    transitions.require(RunState.LEASED, RunState.READY)
    failed_runs: list[str] = []
    lost_attempts: list[LostAttempts] = []
    for run in expired:
        if _lost_attempts_exhaust_retries(tx, run.id, run.lost_attempts + 1, run.retries):
            failed, recorded = lost.fail_run(tx, run.id, run.lost_attempts + 1, now_ms)
            if failed:
                failed_runs.append(run.id)
                lost_attempts.extend(recorded)
                tx.log("lease.expired", run_id=run.id, worker_id=run.worker_id, run_failed=True)
            continue
        if _EXPIRE_LEASE.run(tx, run_id=run.id, now_ms=now_ms).rowcount == 1:
            apps.add(run.app_id)
            tx.log(
                "lease.expired", run_id=run.id, worker_id=run.worker_id, lost_attempts=run.lost_attempts + 1
            )
    apps.update(_BECAME_READY.run(tx, since_ms=since_ms, now_ms=now_ms).scalars())
    return TimerResult(
        timed_out_waits=timed_out,
        expired_leases=len(expired),
        wakeups=Wakeups(ready_apps=frozenset(apps)),
        ended=tuple(ended),
        failed_runs=tuple(failed_runs),
        lost=tuple(lost_attempts),
    )


def _lost_attempts_exhaust_retries(tx: Tx, run_id: str, lost_attempts: int, retries: int) -> bool:
    """Whether handing the run out again could start user code a (retries+2)th time.

    The code that was in flight is the first step not yet completed (determinism): a step retrying
    after failures if there is one, else a step not recorded yet or code outside steps, whose
    attempts so far are only the lost ones. Conservative: a worker that died while replaying
    memoized steps, or before a sleep or a wait, is charged too."""
    failed = _RETRYING_STEP_FAILURES.run(tx, run_id=run_id).scalar()
    return int(failed or 0) + lost_attempts > retries


def queue_depth(tx: Tx, now_ms: int) -> int:
    """How many runs are ready to be handed out now (for the queue-depth metric)."""
    return int(_QUEUE_DEPTH.run(tx, now_ms=now_ms).scalar() or 0)


def next_deadline(tx: Tx, now_ms: int) -> int | None:
    """The nearest future deadline: a ready time, a lease expiry or a wait timeout."""
    candidates = [
        _NEXT_READY.run(tx, now_ms=now_ms).scalar(),
        _NEXT_LEASE_EXPIRY.run(tx).scalar(),
        _NEXT_WAIT_TIMEOUT.run(tx).scalar(),
    ]
    deadlines = [int(c) for c in candidates if c is not None]
    return min(deadlines) if deadlines else None
