"""Reading runs for people and tools, and cancelling them."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from sqlalchemy import select, update

from orchestrator import errors
from orchestrator.engine import transitions
from orchestrator.engine.model import (
    RunFilter,
    RunState,
    RunStatus,
    RunView,
    StepAttempt,
    StepKind,
    StepStatus,
    StepView,
)
from orchestrator.store import schema as t
from orchestrator.store import txn
from orchestrator.store.txn import AnyRow, Tx


def get_run(tx: Tx, run_id: str) -> RunView:
    """One run with its steps and their attempt history."""
    row = tx.conn.execute(select(t.runs).where(t.runs.c.id == run_id)).first()
    if row is None:
        raise errors.NotFound(f"run {run_id} not found")
    return _views(tx, [row], include_steps=True)[0]


def list_runs(tx: Tx, f: RunFilter) -> list[RunView]:
    """Runs, newest first, filtered."""
    r = t.runs
    conditions = []
    if f.app_id:
        conditions.append(r.c.app_id == f.app_id)
    if f.function_id:
        conditions.append(r.c.function_id == f.function_id)
    if f.status is not None:
        conditions.append(r.c.status == f.status)
    if f.event_id:
        conditions.append(r.c.event_id == f.event_id)
    query = select(r).order_by(r.c.created_ms.desc(), r.c.id.desc()).limit(f.limit)
    if conditions:
        query = query.where(*conditions)
    rows = tx.conn.execute(query).all()
    return _views(tx, rows, include_steps=f.include_steps)


def _views(tx: Tx, rows: Sequence[AnyRow], *, include_steps: bool) -> list[RunView]:
    if not rows:
        return []
    events = txn.events_by_seq(tx, {row.event_seq for row in rows})
    steps = _step_views(tx, [row.id for row in rows]) if include_steps else {}
    return [
        RunView(
            id=row.id,
            app_id=row.app_id,
            function_id=row.function_id,
            event_id=row.event_id,
            status=RunStatus(row.status),
            output_json=row.output or "",
            error=txn.error_info(row),
            created_ms=row.created_ms,
            ended_ms=row.ended_ms or 0,
            event=events[row.event_seq],
            steps=steps.get(row.id, ()),
        )
        for row in rows
    ]


def _step_views(tx: Tx, run_ids: Sequence[str]) -> dict[str, tuple[StepView, ...]]:
    s, a = t.steps, t.step_attempts
    history: dict[tuple[str, str], list[StepAttempt]] = {}
    for row in tx.conn.execute(
        select(a).where(a.c.run_id.in_(run_ids)).order_by(a.c.run_id, a.c.step_id, a.c.attempt)
    ):
        history.setdefault((row.run_id, row.step_id), []).append(
            StepAttempt(
                attempt=row.attempt,
                started_ms=row.started_ms,
                ended_ms=row.ended_ms or 0,
                failed=bool(row.failed),
                error=txn.error_info(row),
            )
        )
    views: dict[str, list[StepView]] = {}
    for row in tx.conn.execute(select(s).where(s.c.run_id.in_(run_ids)).order_by(s.c.run_id, s.c.position)):
        # A step with no attempt rows succeeded (or sleeps, waits or sent) at its first attempt: that
        # attempt is the step itself (see completions._insert_step).
        attempts = history.get((row.run_id, row.step_id)) or [
            StepAttempt(0, row.started_ms, row.ended_ms or 0, failed=False, error=None)
        ]
        if row.ended_ms and not attempts[-1].ended_ms:
            # A sleep or wait recorded by an older release, whose attempt row was left open when it
            # ended: the step's end is the attempt's.
            attempts[-1] = dataclasses.replace(attempts[-1], ended_ms=row.ended_ms)
        views.setdefault(row.run_id, []).append(
            StepView(
                id=row.step_id,
                kind=StepKind(row.kind),
                status=StepStatus(row.status),
                attempts=len(attempts),
                output_json=row.output or "",
                error=txn.error_info(row),
                started_ms=row.started_ms,
                ended_ms=row.ended_ms or 0,
                wake_ms=row.wake_ms or 0,
                wait_event=row.wait_event or "",
                wait_match=row.wait_match or "",
                resumed_by_event_id=row.resumed_by_event_id or "",
                position=row.position,
                history=tuple(attempts),
            )
        )
    return {run_id: tuple(v) for run_id, v in views.items()}


def cancel(tx: Tx, run_id: str, now_ms: int) -> RunView:
    """Cancels a run that has not ended, with its lease and open waits."""
    r = t.runs
    # Waits before the run row: the same lock order as an event resuming a wait (PostgreSQL).
    txn.cancel_waits(tx, run_id)
    run = txn.locked_run(tx, run_id)
    if not transitions.can_cancel(RunState(run.state)):
        if run.status == RunStatus.CANCELLED:
            raise errors.RunEnded(f"run {run_id} was already cancelled")
        raise errors.RunEnded(f"run {run_id} already ended ({run.status})")
    transitions.require(RunState(run.state), RunState.ENDED)
    tx.conn.execute(
        update(r)
        .where(r.c.id == run_id, r.c.state != RunState.ENDED)
        .values(
            status=RunStatus.CANCELLED,
            state=RunState.ENDED,
            lease_id=None,
            lease_expires_ms=None,
            worker_id=None,
            ended_ms=now_ms,
        )
    )
    tx.log("run.cancelled", run_id=run_id, function_id=run.function_id, was=run.state)
    return get_run(tx, run_id)
