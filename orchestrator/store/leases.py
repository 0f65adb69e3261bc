"""Handing runs to workers: claims (with their memoized steps), lease extension and release."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update

from orchestrator import clock
from orchestrator.engine import transitions
from orchestrator.engine.model import (
    ClaimResult,
    MemoStep,
    RunState,
    StepKind,
    StepStatus,
    Wakeups,
    WorkItem,
)
from orchestrator.store import schema as t
from orchestrator.store import txn
from orchestrator.store.txn import Tx


def claim(
    tx: Tx,
    app_id: str,
    function_ids: Sequence[str],
    worker_id: str,
    max_items: int,
    now_ms: int,
    lease_ms: int,
) -> ClaimResult:
    """Leases up to ``max_items`` ready runs of the app and loads what the worker needs to execute them."""
    r = t.runs
    query = select(r.c.id).where(
        r.c.app_id == app_id, r.c.state == RunState.READY, r.c.available_at_ms <= now_ms
    )
    if function_ids:
        query = query.where(r.c.function_id.in_(function_ids))
    # SKIP LOCKED: concurrent pollers on PostgreSQL take different runs instead of queueing on
    # the same rows (SQLite renders no FOR UPDATE; its single writer serialises claims).
    query = query.order_by(r.c.available_at_ms, r.c.id).limit(max_items).with_for_update(skip_locked=True)
    candidates = list(tx.conn.scalars(query))
    if not candidates:
        return ClaimResult(())
    expires = now_ms + lease_ms
    transitions.require(RunState.READY, RunState.LEASED)
    leases: dict[str, str] = {}
    for run_id in candidates:
        lease_id = clock.new_lease_id()
        claimed = tx.conn.execute(
            update(r)
            .where(r.c.id == run_id, r.c.state == RunState.READY)
            .values(
                state=RunState.LEASED,
                lease_id=lease_id,
                lease_expires_ms=expires,
                worker_id=worker_id,
            )
        )
        if claimed.rowcount == 1:
            leases[run_id] = lease_id
    run_ids = list(leases)
    _complete_elapsed_sleeps(tx, run_ids, now_ms)
    rows = {row.id: row for row in tx.conn.execute(select(r).where(r.c.id.in_(run_ids)))}
    events = txn.events_by_seq(tx, {row.event_seq for row in rows.values()})
    memo = _memo_steps(tx, run_ids)
    items: list[WorkItem] = []
    for run_id in run_ids:
        row = rows[run_id]
        steps = memo.get(run_id, ())
        retried = [
            st.attempts
            for st in steps
            if st.kind == StepKind.RUN and st.status == StepStatus.RUNNING and st.attempts > 0
        ]
        # Attempts lost with their workers are used attempts too (the SDK's ctx.attempt).
        attempt = (retried[0] if retried else row.body_attempts) + row.lost_attempts
        items.append(
            WorkItem(
                run_id=run_id,
                app_id=row.app_id,
                function_id=row.function_id,
                event=events[row.event_seq],
                steps=steps,
                attempt=attempt,
                lease_id=leases[run_id],
                lease_expires_ms=expires,
            )
        )
        tx.log(
            "run.leased",
            run_id=run_id,
            function_id=row.function_id,
            worker_id=worker_id,
            attempt=attempt,
            steps=len(steps),
        )
    return ClaimResult(tuple(items), Wakeups(deadline_ms=expires))


def _complete_elapsed_sleeps(tx: Tx, run_ids: Sequence[str], now_ms: int) -> None:
    s, r = t.steps, t.runs
    if not run_ids:
        return
    elapsed = tx.conn.execute(
        select(s.c.run_id, s.c.step_id).where(
            s.c.run_id.in_(run_ids), s.c.status == StepStatus.SLEEPING, s.c.wake_ms <= now_ms
        )
    ).all()
    if not elapsed:
        return
    mark = txn.max_seq(tx)
    for row in elapsed:
        tx.conn.execute(
            update(s)
            .where(s.c.run_id == row.run_id, s.c.step_id == row.step_id)
            .values(status=StepStatus.COMPLETED, output="null", ended_ms=now_ms)
        )
        txn.end_attempt(tx, row.run_id, row.step_id, now_ms)
        tx.conn.execute(update(r).where(r.c.id == row.run_id).values(event_mark=mark))
        tx.log("step.completed", run_id=row.run_id, step_id=row.step_id, kind=StepKind.SLEEP)


def _memo_steps(tx: Tx, run_ids: Sequence[str]) -> dict[str, tuple[MemoStep, ...]]:
    s = t.steps
    rows = tx.conn.execute(select(s).where(s.c.run_id.in_(run_ids)).order_by(s.c.run_id, s.c.position))
    memo: dict[str, list[MemoStep]] = {}
    for row in rows:
        memo.setdefault(row.run_id, []).append(
            MemoStep(
                id=row.step_id,
                kind=StepKind(row.kind),
                status=StepStatus(row.status),
                output_json=row.output or "",
                attempts=row.failed_attempts,
                position=row.position,
            )
        )
    return {run_id: tuple(steps) for run_id, steps in memo.items()}


def extend(tx: Tx, run_id: str, lease_id: str, now_ms: int, lease_ms: int) -> int:
    """Extends the current lease to ``now_ms + lease_ms`` (never shortens it); returns the expiry."""
    r = t.runs
    run = txn.locked_run(tx, run_id)
    if run.lease_id != lease_id:
        raise txn.not_current(run, lease_id)
    expires = max(now_ms + lease_ms, run.lease_expires_ms or 0)
    tx.conn.execute(update(r).where(r.c.id == run_id).values(lease_expires_ms=expires))
    return expires


def release(tx: Tx, run_id: str, lease_id: str, now_ms: int) -> Wakeups:
    """Hands a leased run back: ready at once, the attempt in progress not counted."""
    r = t.runs
    run = txn.locked_run(tx, run_id)
    if run.lease_id != lease_id:
        if run.last_stop_lease_id == lease_id:
            return Wakeups()  # the worker already let the run go with that lease
        raise txn.not_current(run, lease_id)
    transitions.require(RunState.LEASED, RunState.READY)
    tx.conn.execute(
        update(r)
        .where(r.c.id == run_id, r.c.lease_id == lease_id)
        .values(
            state=RunState.READY,
            available_at_ms=now_ms,
            lease_id=None,
            lease_expires_ms=None,
            worker_id=None,
        )
    )
    tx.log("lease.released", run_id=run_id, worker_id=run.worker_id)
    return Wakeups(ready_apps=frozenset({run.app_id}))
