"""Event ingest in the caller's transaction: dedupe by id, start triggered runs, resume matching
waits; and function registration."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update

from orchestrator import clock
from orchestrator.engine import matching, transitions
from orchestrator.engine.model import (
    EventRecord,
    FunctionSpec,
    IngestResult,
    NewEvent,
    RunState,
    RunStatus,
    StepStatus,
    WaitStatus,
    Wakeups,
)
from orchestrator.store import schema as t
from orchestrator.store import txn
from orchestrator.store.txn import AnyRow, Tx


def ingest(tx: Tx, events: Sequence[NewEvent], now_ms: int) -> IngestResult:
    """Stores new events (a known id is acknowledged and starts nothing), starts the runs they
    trigger and resumes the waits they match."""
    tx.dialect.lock_for_ingest(tx.conn, [e.name for e in events])
    ids = [e.id or clock.new_id() for e in events]
    seen = set(tx.conn.scalars(select(t.events.c.id).where(t.events.c.id.in_(set(ids)))))
    new_rows: list[dict[str, Any]] = []
    for event, event_id in zip(events, ids, strict=True):
        if event_id in seen:
            tx.log("event.duplicate", event_id=event_id, name=event.name)
            continue
        seen.add(event_id)
        new_rows.append(
            {
                "id": event_id,
                "name": event.name,
                "data": event.data_json,
                "ts_ms": event.ts_ms or now_ms,
                "received_ms": now_ms,
            }
        )
    if not new_rows:
        return IngestResult(tuple(ids), ())
    inserted = tx.conn.execute(
        insert(t.events).returning(t.events.c.seq, t.events.c.id, sort_by_parameter_order=True),
        new_rows,
    )
    seqs = {row.id: row.seq for row in inserted}
    records = [EventRecord(seqs[r["id"]], r["id"], r["name"], r["data"], r["ts_ms"]) for r in new_rows]
    for record in records:
        tx.log("event.received", event_id=record.id, name=record.name, seq=record.seq)
    run_ids, ready_apps = _start_runs(tx, records, now_ms)
    for record in records:
        ready_apps |= _resolve_waits_for(tx, record, now_ms)
    return IngestResult(tuple(ids), tuple(run_ids), Wakeups(frozenset(ready_apps)))


def _start_runs(tx: Tx, records: Sequence[EventRecord], now_ms: int) -> tuple[list[str], set[str]]:
    ft, fn = t.function_triggers, t.functions
    names = sorted({r.name for r in records})
    rows = tx.conn.execute(
        select(ft.c.event_name, ft.c.app_id, ft.c.function_id, fn.c.retries)
        .select_from(ft.join(fn))
        .where(ft.c.event_name.in_(names))
        .order_by(ft.c.app_id, ft.c.function_id)
    ).all()
    targets: dict[str, list[AnyRow]] = {}
    for row in rows:
        targets.setdefault(row.event_name, []).append(row)
    run_rows: list[dict[str, Any]] = []
    for record in records:
        for target in targets.get(record.name, ()):
            run_id = clock.new_id()
            run_rows.append(
                {
                    "id": run_id,
                    "app_id": target.app_id,
                    "function_id": target.function_id,
                    "event_seq": record.seq,
                    "event_id": record.id,
                    "status": RunStatus.RUNNING,
                    "state": RunState.READY,
                    "available_at_ms": now_ms,
                    "retries": target.retries,
                    "body_attempts": 0,
                    "event_mark": record.seq,
                    "step_count": 0,
                    "created_ms": now_ms,
                }
            )
            tx.log(
                "run.created",
                run_id=run_id,
                app_id=target.app_id,
                function_id=target.function_id,
                event_id=record.id,
                event=record.name,
            )
    if run_rows:
        tx.conn.execute(insert(t.runs), run_rows)
    return [r["id"] for r in run_rows], {r["app_id"] for r in run_rows}


def _resolve_waits_for(tx: Tx, record: EventRecord, now_ms: int) -> set[str]:
    """Resumes the open waits this new event matches: an indexed lookup per distinct match path
    of the open waits on its name."""
    w = t.waits
    paths = list(
        tx.conn.scalars(
            select(w.c.match_path)
            .where(w.c.event_name == record.name, w.c.status == WaitStatus.WAITING)
            .distinct()
        )
    )
    if not paths:
        return set()
    event_obj = matching.event_object(record.id, record.name, record.data_json, record.ts_ms)
    apps: set[str] = set()
    for path in sorted(paths):
        value = matching.match_value(event_obj, path)
        if value is None:
            continue
        candidates = tx.conn.execute(
            select(w.c.id, w.c.run_id, w.c.step_id, w.c.match_value)
            .where(
                w.c.event_name == record.name,
                w.c.status == WaitStatus.WAITING,
                w.c.match_path == path,
                w.c.match_hash == txn.hash_value(value),
            )
            .order_by(w.c.id)
        ).all()
        for wait in candidates:
            if wait.match_value != value:
                continue
            app = resolve_wait(tx, wait.id, wait.run_id, wait.step_id, record, now_ms)
            if app is not None:
                apps.add(app)
    return apps


def resolve_wait(
    tx: Tx,
    wait_id: int,
    run_id: str,
    step_id: str,
    record: EventRecord | None,
    now_ms: int,
) -> str | None:
    """Resolves one wait with an event (or a timeout when ``record`` is None). The conditional
    update on the wait row decides a race between the two: exactly one wins. Returns the app
    of the run made ready, or None when the other side had already won."""
    w, s, r = t.waits, t.steps, t.runs
    won = tx.conn.execute(
        update(w)
        .where(w.c.id == wait_id, w.c.status == WaitStatus.WAITING)
        .values(
            status=WaitStatus.MATCHED if record else WaitStatus.TIMED_OUT,
            resolved_event_id=record.id if record else None,
            resolved_ms=now_ms,
        )
    )
    if won.rowcount != 1:
        return None
    if record is not None:
        output = matching.event_output_json(record.id, record.name, record.data_json, record.ts_ms)
        # The event that resumed the wait, and none before it, is consumed: a later wait of this
        # run looks at events after it.
        mark = record.seq
    else:
        output, mark = "null", txn.max_seq(tx)
    tx.conn.execute(
        update(s)
        .where(s.c.run_id == run_id, s.c.step_id == step_id)
        .values(
            status=StepStatus.COMPLETED,
            output=output,
            ended_ms=now_ms,
            resumed_by_event_id=record.id if record else None,
        )
    )
    txn.end_attempt(tx, run_id, step_id, now_ms)
    transitions.require(RunState.PARKED, RunState.READY)
    app_id = tx.conn.scalar(
        update(r)
        .where(r.c.id == run_id, r.c.state == RunState.PARKED)
        .values(state=RunState.READY, available_at_ms=now_ms, event_mark=mark)
        .returning(r.c.app_id)
    )
    if record is not None:
        tx.log("wait.matched", run_id=run_id, step_id=step_id, event_id=record.id)
    else:
        tx.log("wait.timed_out", run_id=run_id, step_id=step_id)
    return str(app_id) if app_id is not None else None


def register(tx: Tx, app_id: str, functions: Sequence[FunctionSpec], now_ms: int) -> None:
    """Creates or updates an app's functions; each one's triggers become exactly the given ones."""
    fn, ft = t.functions, t.function_triggers
    for spec in functions:
        tx.conn.execute(
            tx.dialect.upsert(fn, keys=["app_id", "function_id"], update=["retries", "updated_ms"]),
            {
                "app_id": app_id,
                "function_id": spec.function_id,
                "retries": spec.retries,
                "registered_ms": now_ms,
                "updated_ms": now_ms,
            },
        )
        tx.conn.execute(
            delete(ft).where(
                ft.c.app_id == app_id,
                ft.c.function_id == spec.function_id,
                ft.c.event_name.not_in(spec.triggers),
            )
        )
        tx.conn.execute(
            tx.dialect.upsert(ft, keys=["app_id", "function_id", "event_name"], update=[]),
            [
                {"app_id": app_id, "function_id": spec.function_id, "event_name": name}
                for name in spec.triggers
            ],
        )
        tx.log(
            "function.registered",
            app_id=app_id,
            function_id=spec.function_id,
            triggers=",".join(spec.triggers),
            retries=spec.retries,
        )
