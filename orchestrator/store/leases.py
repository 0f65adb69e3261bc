"""Handing runs to workers: claims (with their memoized steps), lease extension and release."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Select, bindparam, select, text, union_all, update
from sqlalchemy.exc import DBAPIError

from orchestrator import clock
from orchestrator.engine import transitions
from orchestrator.engine.model import (
    ClaimResult,
    EventRecord,
    MemoStep,
    RunState,
    StepKind,
    StepStatus,
    SuspensionEnded,
    Wakeups,
    WorkItem,
)
from orchestrator.store import schema as t
from orchestrator.store import txn
from orchestrator.store.prepared import Prepared
from orchestrator.store.txn import AnyRow, Tx

_r, _s, _e = t.runs, t.steps, t.events
# The newest event seq (``txn.NEWEST_SEQ``) for hand-written statements.
_NEWEST_SEQ_SQL = "COALESCE((SELECT seq FROM events ORDER BY seq DESC LIMIT 1), 0)"


# The events table under a name of its own in the subqueries of a lease's RETURNING, whose columns
# SQLite renders unqualified: ``seq`` there can only be the event's, ``event_seq`` only the run's.
_EV = _e.alias("ev")


def _event_column(name: str) -> Any:
    """A column of the event that started the run being leased (by its primary key: one lookup)."""
    column = _EV.c[name]
    return select(column).where(_EV.c.seq == _r.c.event_seq).scalar_subquery().label(f"event_{name}")


# The memo of a run being leased, as one JSON array of [step_id, kind, status, output,
# failed_attempts, position, wake_ms] per recorded step (``_MEMO_FIELDS``; in no particular order:
# SQLite 3.40 has no ORDER BY inside an aggregate), read by the steps' index on (run_id, position);
# none before the run recorded a step. In the claim's RETURNING, where a second statement for the
# memo cost a resume 0.02-0.06 ms end to end. A memo longer than SQLite's longest string (a billion
# bytes by default: hundreds of maximal outputs) fails the statement, which then runs again without
# memos (``_MEMO_NONE``), read by ``_STEPS_OF``: one such run must not fail every claim of its app.
_MEMO_FIELDS = ("step_id", "kind", "status", "output", "failed_attempts", "position", "wake_ms")
_MEMO_JSON = text(
    "CASE WHEN runs.step_count > 0 THEN (SELECT json_group_array(json_array("
    + ", ".join(f"st.{name}" for name in _MEMO_FIELDS)
    + ")) FROM steps AS st WHERE st.run_id = runs.id) END AS memo"
)
_MEMO_NONE = text("NULL AS memo")


def _ready_of_app(function_param: str | None = None) -> Select[Any]:
    """The app's ready runs, oldest first, at most ``max_items``: all of them, or those of the
    function the parameter named ``function_param`` gives."""
    chosen = (
        select(_r.c.id, _r.c.available_at_ms)
        .where(
            _r.c.app_id == bindparam("app_id"),
            _r.c.state == RunState.READY,
            _r.c.available_at_ms <= bindparam("now_ms"),
        )
        # Oldest first, in the claim index's own order, so the scan stops after max_items rows. (With
        # a tie-break on id, every ready run of the app was read and sorted per claim: O(backlog).)
        .order_by(_r.c.available_at_ms)
        .limit(bindparam("max_items"))
    )
    return chosen.where(_r.c.function_id == bindparam(function_param)) if function_param else chosen


def _of_functions(count: int) -> Select[Any]:
    """The oldest ready runs of ``count`` functions (parameters ``function_0`` ...): at most
    ``max_items`` of each, read from its own range of the (app, function, state, ready time) index,
    then the oldest of those. One range per function rather than the app's range filtered by
    function, which read every ready run of the app's other functions older than these (a worker
    serving some functions beside another function's backlog: 5 ms per claim with 50,000 ready)."""
    scans = [_ready_of_app(f"function_{i}").subquery(f"of_{i}") for i in range(count)]
    each = (select(scan.c.id, scan.c.available_at_ms) for scan in scans)
    candidates = union_all(*each).subquery("candidates")
    return (
        select(candidates.c.id, candidates.c.available_at_ms)
        .order_by(candidates.c.available_at_ms)
        .limit(bindparam("max_items"))
    )


def _lease_oldest(*, functions: int, memos: bool) -> Prepared:
    # SQLite: a claim is one statement, which leases the oldest ready runs of the app (chosen by the
    # claim index in the subquery, then reached by primary key) and returns what their work items
    # need, their events included. RETURNING cannot name a joined table (an UPDATE ... FROM's), but
    # its scalar subqueries may read any: one lookup by primary key per event column. One statement
    # where a SELECT of the candidates joined with their events, then an UPDATE of their ids, took
    # two (a claim 0.12 ms instead of 0.155 back to back; the same after an idle gap, where reading
    # the same pages costs the most). The runs of one claim share its lease token: fencing compares
    # a run's current token only, which a later claim of the run replaces. No "AND state = 'ready'"
    # beside the primary key: the subquery chose ready runs in the same statement, under the write
    # lock (BEGIN IMMEDIATE); and with it SQLite's planner (no statistics) chose the index on state
    # over the primary key for five ids or more, so every claim read every ready run (a backlog of
    # 30,000 ready runs made parking CPU-bound on it). ``functions``: 0 for all of the app's
    # functions, OF_MANY for a list of more than MAX_FUNCTION_SCANS (``function_ids``), else how
    # many the claim names (``_of_functions``).
    if functions == OF_MANY:
        # The app's range, filtered by function: more ranges than that cost more than they save.
        ready = _ready_of_app().where(_r.c.function_id.in_(bindparam("function_ids", expanding=True)))
    elif functions == 1:
        ready = _ready_of_app("function_0")
    elif functions:
        ready = _of_functions(functions)
    else:
        ready = _ready_of_app()
    # The ids straight from the index's scan where one range is read (no subquery of its own).
    if functions in (0, 1, OF_MANY):
        chosen = ready.with_only_columns(ready.selected_columns.id).correlate(None)
    else:
        chosen = select(ready.subquery("chosen").c.id)
    statement = (
        update(_r)
        .where(_r.c.id.in_(chosen.scalar_subquery()))
        .values(
            state=RunState.LEASED,
            lease_id=bindparam("lease_id"),
            lease_expires_ms=bindparam("lease_expires_ms"),
            worker_id=bindparam("worker_id"),
        )
        .returning(
            _r.c.id,
            _r.c.app_id,
            _r.c.function_id,
            _r.c.body_attempts,
            _r.c.lost_attempts,
            _r.c.step_count,
            _r.c.available_at_ms,
            _r.c.event_seq,
            *(_event_column(name) for name in ("id", "name", "data", "ts_ms")),
            _MEMO_JSON if memos else _MEMO_NONE,
        )
    )
    return Prepared(statement, expanding=("function_ids",) if functions == OF_MANY else ())


# SQLite's claim statements by (how many functions the claim names, 0 for all; with memos), made
# when first needed: a worker names the same functions at every poll. A claim naming more than
# MAX_FUNCTION_SCANS functions reads the app's range and filters it (OF_MANY).
MAX_FUNCTION_SCANS = 16
OF_MANY = -1
_LEASE_OLDEST: dict[tuple[int, bool], Prepared] = {}


def lease_oldest(functions: int, *, memos: bool) -> Prepared:
    """SQLite's claim statement for a claim naming ``functions`` functions (0: all of them; more
    than MAX_FUNCTION_SCANS: OF_MANY)."""
    if functions > MAX_FUNCTION_SCANS:
        functions = OF_MANY
    key = (functions, memos)
    statement = _LEASE_OLDEST.get(key)
    if statement is None:
        statement = _LEASE_OLDEST[key] = _lease_oldest(functions=functions, memos=memos)
    return statement


def function_params(function_ids: Sequence[str]) -> dict[str, Any]:
    """The parameters naming ``function_ids`` in ``lease_oldest(len(function_ids))``'s statement."""
    if len(function_ids) > MAX_FUNCTION_SCANS:
        return {"function_ids": list(function_ids)}
    return {f"function_{i}": function_id for i, function_id in enumerate(function_ids)}


# PostgreSQL: a claim is one statement. It chooses the oldest ready runs (SKIP LOCKED: concurrent
# pollers take different runs), ends the sleeps of theirs whose time came (a sleeping run is simply
# ready at its wake time: the claim that takes it ends the sleep), leases them, and returns each with
# its event and its memo (the recorded steps as arrays, in position order). One round trip where
# the candidates, the lease, the memo read and the sleep writes took three or more; and with no
# write left to follow it, the claim can carry the transaction's COMMIT (``Tx.last_call``).
# SQLite runs ``lease_oldest``'s, which returns the memo as JSON.
# The memo shows the steps as they were before the statement (one snapshot): a sleep it ends reads
# as sleeping there, and ``_memo`` reports it completed under the same "wake_ms <= now" test.
# Written for PostgreSQL's generic plan, which a prepared statement runs once it costs less than
# planning each execution: it cannot see :max_items, so it expects a tenth of the ready runs to be
# chosen. With the chosen runs joined to runs, steps and events, that plan hashed all three tables
# (sequential scans); with statistics (ANALYZE, autovacuum) it was never chosen and each claim was
# planned anew, 0.55 ms of the server's time per claim. Here every table is reached by its index
# whatever the estimates: the chosen ids as an array (index scans on the keys), the event and the
# memo through LATERAL subqueries (LIMIT 1 keeps the event's from being flattened into a join).
# ``ready`` is written out so that the plan weighs it with its statistics (few runs are ready).
_LEASE_READY = Prepared(
    text(
        f"""
        WITH chosen AS (
            SELECT id FROM runs
            WHERE app_id = :app_id AND state = '{RunState.READY.value}' AND available_at_ms <= :now_ms
                AND (cardinality(CAST(:function_ids AS text[])) = 0
                     OR function_id = ANY(CAST(:function_ids AS text[])))
            ORDER BY available_at_ms
            LIMIT :max_items
            FOR UPDATE SKIP LOCKED
        ), woke AS (
            UPDATE steps SET status = :completed, output = 'null', ended_ms = :now_ms
            WHERE steps.run_id = ANY(ARRAY(SELECT id FROM chosen))
                AND steps.status = :sleeping AND steps.wake_ms <= :now_ms
            RETURNING steps.run_id
        ), leased AS (
            UPDATE runs SET state = :leased, lease_id = :lease_id, lease_expires_ms = :lease_expires_ms,
                worker_id = :worker_id,
                -- The sleep is the run's newest committed step: a wait after it looks at events
                -- from now on.
                event_mark = CASE WHEN runs.id IN (SELECT run_id FROM woke)
                    THEN ({_NEWEST_SEQ_SQL}) ELSE runs.event_mark END
            WHERE runs.id = ANY(ARRAY(SELECT id FROM chosen))
            RETURNING runs.id, runs.app_id, runs.function_id, runs.body_attempts, runs.lost_attempts,
                runs.step_count, runs.available_at_ms, runs.event_seq
        )
        SELECT leased.*, ev.*, memo.*
        FROM leased
        CROSS JOIN LATERAL (
            SELECT events.id AS event_id, events.name AS event_name, events.data AS event_data,
                events.ts_ms AS event_ts_ms
            FROM events WHERE events.seq = leased.event_seq
            LIMIT 1
        ) AS ev
        LEFT JOIN LATERAL (
            SELECT array_agg(s.step_id ORDER BY s.position) AS memo_ids,
                array_agg(s.kind ORDER BY s.position) AS memo_kinds,
                array_agg(s.status ORDER BY s.position) AS memo_statuses,
                array_agg(s.output ORDER BY s.position) AS memo_outputs,
                array_agg(s.failed_attempts ORDER BY s.position) AS memo_attempts,
                array_agg(s.position ORDER BY s.position) AS memo_positions,
                array_agg(s.wake_ms ORDER BY s.position) AS memo_wakes
            FROM steps AS s
            WHERE s.run_id = leased.id AND leased.step_count > 0
        ) AS memo ON true
        ORDER BY leased.available_at_ms
        """
    ).bindparams(
        bindparam("leased", RunState.LEASED, literal_execute=False),
        bindparam("completed", StepStatus.COMPLETED, literal_execute=False),
        bindparam("sleeping", StepStatus.SLEEPING, literal_execute=False),
    )
)
_STEPS_OF = Prepared(
    select(*(_s.c[name] for name in ("run_id", *_MEMO_FIELDS)))
    .where(_s.c.run_id.in_(bindparam("run_ids", expanding=True)))
    .order_by(_s.c.run_id, _s.c.position),
    expanding=("run_ids",),
)
_MARK = Prepared(update(_r).where(_r.c.id == bindparam("run_id")).values(event_mark=txn.NEWEST_SEQ))
_EXTEND = Prepared(
    update(_r).where(_r.c.id == bindparam("run_id")).values(lease_expires_ms=bindparam("lease_expires_ms"))
)
_RELEASE = Prepared(
    update(_r)
    .where(_r.c.id == bindparam("run_id"), _r.c.lease_id == bindparam("current_lease"))
    .values(
        state=RunState.READY,
        available_at_ms=bindparam("available_at_ms"),
        lease_id=None,
        lease_expires_ms=None,
        worker_id=None,
    )
)


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
    expires = now_ms + lease_ms
    transitions.require(RunState.READY, RunState.LEASED)
    lease_id = clock.new_lease_id()
    if tx.dialect.name == "postgresql":
        fresh = _lease_unsent(tx, app_id, function_ids, worker_id, max_items, now_ms, lease_id, expires)
        if fresh is not None:
            return fresh
        txn.plan_by_index(tx)
        # One statement, with the transaction's COMMIT when the claim is its last call.
        rows = _LEASE_READY.run(
            tx, commit=tx.last_call, app_id=app_id, function_ids=list(function_ids), now_ms=now_ms,
            max_items=max_items, lease_id=lease_id, lease_expires_ms=expires, worker_id=worker_id,
        ).all()  # fmt: skip
        return _leased_in_one_statement(tx, rows, worker_id, lease_id, now_ms, expires)
    params: dict[str, Any] = {
        "app_id": app_id, "now_ms": now_ms, "max_items": max_items, "lease_id": lease_id,
        "lease_expires_ms": expires, "worker_id": worker_id,
    }  # fmt: skip
    params.update(function_params(function_ids))
    functions = len(function_ids)
    try:
        # (All of an UPDATE's RETURNING rows are made by its first step, inside ``run``.)
        rows = lease_oldest(functions, memos=True).run(tx, **params).all()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlite_errorcode", None) != sqlite3.SQLITE_TOOBIG:
            raise
        # A memo too long for one string (see ``_MEMO_JSON``); the failed statement changed nothing.
        rows = lease_oldest(functions, memos=False).run(tx, **params).all()
    if not rows:
        return ClaimResult(())
    # RETURNING's order is not the chosen one: oldest first, as the claim index read them.
    rows.sort(key=lambda row: row.available_at_ms)
    leased = [(row, lease_id) for row in rows]
    recorded: dict[str, list[Sequence[Any]]] = {row.id: json.loads(row.memo) for row in rows if row.memo}
    unread = [row.id for row in rows if row.step_count and not row.memo]
    if unread:
        for step in _STEPS_OF.run(tx, run_ids=unread):
            recorded.setdefault(step.run_id, []).append(step[1:])
    memo, ended = _memo_steps(tx, recorded, now_ms)
    return _work_items(tx, leased, worker_id, expires, memo, ended)


def _lease_unsent(
    tx: Tx,
    app_id: str,
    function_ids: Sequence[str],
    worker_id: str,
    max_items: int,
    now_ms: int,
    lease_id: str,
    expires: int,
) -> ClaimResult | None:
    """PostgreSQL: the runs an event of this transaction is about to insert (``txn.UnsentRuns``),
    inserted leased to this claim, with the COMMIT when the claim is the transaction's last call.
    None when there are none for it, or when they were inserted ready (a ready run it would choose
    was older) and the claim can still take the oldest: its statement runs then. After the COMMIT
    that is an empty result: the poller claims again."""
    unsent = tx.unsent_runs
    lease = (lease_id, expires, worker_id)
    if unsent is None or not unsent.lease(app_id, function_ids, max_items, now_ms, lease):
        return None
    if tx.last_call:
        tx.commit()
    else:
        tx.flush()
    if not unsent.leased:
        return ClaimResult(()) if tx.committed else None
    event = unsent.event
    rows = [
        SimpleNamespace(
            id=run_id, app_id=app_id, function_id=function_id, body_attempts=0, lost_attempts=0,
            event_seq=event.seq, event_id=event.id, event_name=event.name, event_data=event.data_json,
            event_ts_ms=event.ts_ms,
        )  # fmt: skip
        for run_id, function_id in unsent.leased
    ]
    return _work_items(tx, [(row, lease_id) for row in rows], worker_id, expires, {}, ())


def _leased_in_one_statement(
    tx: Tx, rows: Sequence[AnyRow], worker_id: str, lease_id: str, now_ms: int, expires: int
) -> ClaimResult:
    """PostgreSQL: the work items of the runs ``_LEASE_READY`` leased, memo included."""
    memo: dict[str, tuple[MemoStep, ...]] = {}
    ended: list[SuspensionEnded] = []
    for row in rows:
        if row.memo_ids:
            memo[row.id] = _memo(tx, row, now_ms, ended)
    return _work_items(tx, [(row, lease_id) for row in rows], worker_id, expires, memo, tuple(ended))


def _memo(tx: Tx, row: AnyRow, now_ms: int, ended: list[SuspensionEnded]) -> tuple[MemoStep, ...]:
    """A claimed run's memo from the claim's arrays (PostgreSQL)."""
    columns = (
        row.memo_ids, row.memo_kinds, row.memo_statuses, row.memo_outputs,
        row.memo_attempts, row.memo_positions, row.memo_wakes,
    )  # fmt: skip
    steps = zip(*columns, strict=True)
    return tuple(_memo_step(tx, row.id, *step, now_ms=now_ms, ended=ended) for step in steps)


def _memo_step(
    tx: Tx,
    run_id: str,
    step_id: str,
    kind: str,
    status_name: str,
    output: str | None,
    attempts: int,
    position: int,
    wake_ms: int | None,
    *,
    now_ms: int,
    ended: list[SuspensionEnded],
) -> MemoStep:
    """One recorded step as the worker's memo. A sleep whose time came reads as completed: the claim
    that hands the run out ends it (and it joins ``ended``)."""
    status = StepStatus(status_name)
    if status == StepStatus.SLEEPING and wake_ms is not None and wake_ms <= now_ms:
        tx.log("step.completed", run_id=run_id, step_id=step_id, kind=StepKind.SLEEP)
        ended.append(SuspensionEnded(run_id, step_id))
        status, output = StepStatus.COMPLETED, "null"
    return MemoStep(
        id=step_id, kind=StepKind(kind), status=status, output_json=output or "", attempts=attempts,
        position=position,
    )  # fmt: skip


def _work_items(
    tx: Tx,
    leased: Sequence[tuple[AnyRow, str]],
    worker_id: str,
    expires: int,
    memo: dict[str, tuple[MemoStep, ...]],
    ended: tuple[SuspensionEnded, ...],
) -> ClaimResult:
    """The work items of the leased runs, with their memoized steps."""
    if not leased:
        return ClaimResult(())
    items: list[WorkItem] = []
    for row, lease_id in leased:
        steps = memo.get(row.id, ())
        retried = [
            st.attempts
            for st in steps
            if st.kind == StepKind.RUN and st.status == StepStatus.RUNNING and st.attempts > 0
        ]
        # Attempts lost with their workers are used attempts too (the SDK's ctx.attempt).
        attempt = (retried[0] if retried else row.body_attempts) + row.lost_attempts
        event = EventRecord(row.event_seq, row.event_id, row.event_name, row.event_data, row.event_ts_ms)
        items.append(
            WorkItem(
                run_id=row.id,
                app_id=row.app_id,
                function_id=row.function_id,
                event=event,
                steps=steps,
                attempt=attempt,
                lease_id=lease_id,
                lease_expires_ms=expires,
                lost_attempts=row.lost_attempts,
            )
        )
        tx.log(
            "run.leased",
            run_id=row.id,
            function_id=row.function_id,
            worker_id=worker_id,
            attempt=attempt,
            steps=len(steps),
        )
    return ClaimResult(tuple(items), Wakeups(deadline_ms=expires), ended)


def _memo_steps(
    tx: Tx, recorded: dict[str, list[Sequence[Any]]], now_ms: int
) -> tuple[dict[str, tuple[MemoStep, ...]], tuple[SuspensionEnded, ...]]:
    """SQLite: the recorded steps of the leased runs (by run, each step's ``_MEMO_FIELDS``) in
    position order, completing the sleeps that have elapsed (a sleeping run is simply ready at its
    wake time: the claim that takes it ends the sleep); and those sleeps."""
    memo: dict[str, tuple[MemoStep, ...]] = {}
    ended: list[SuspensionEnded] = []
    for run_id, fields in recorded.items():
        steps: list[MemoStep] = []
        woke = False
        for step_id, kind, status, output, attempts, position, wake_ms in sorted(
            fields, key=lambda step: step[5]
        ):
            before = len(ended)
            steps.append(
                _memo_step(
                    tx, run_id, step_id, kind, status, output, attempts, position, wake_ms,
                    now_ms=now_ms, ended=ended,
                )  # fmt: skip
            )
            if len(ended) > before:  # a sleep whose time came: this claim ends it
                txn.SLEEP_ELAPSED.run_later(tx, run_id=run_id, step_id=step_id, ended_ms=now_ms)
                woke = True
        if woke:
            # The sleep is the run's newest committed step: a wait after it looks at events from now on.
            _MARK.run(tx, run_id=run_id)
        memo[run_id] = tuple(steps)
    return memo, tuple(ended)


def extend(tx: Tx, run_id: str, lease_id: str, now_ms: int, lease_ms: int) -> int:
    """Extends the current lease to ``now_ms + lease_ms`` (never shortens it); returns the expiry."""
    run = txn.locked_run(tx, run_id)
    if run.lease_id != lease_id:
        raise txn.not_current(run, lease_id)
    expires = max(now_ms + lease_ms, run.lease_expires_ms or 0)
    _EXTEND.run(tx, run_id=run_id, lease_expires_ms=expires)
    return expires


def release(tx: Tx, run_id: str, lease_id: str, now_ms: int) -> Wakeups:
    """Hands a leased run back: ready at once, the attempt in progress not counted."""
    run = txn.locked_run(tx, run_id)
    if run.lease_id != lease_id:
        if run.last_stop_lease_id == lease_id:
            return Wakeups()  # the worker already let the run go with that lease
        raise txn.not_current(run, lease_id)
    transitions.require(RunState.LEASED, RunState.READY)
    _RELEASE.run(tx, run_id=run_id, current_lease=lease_id, available_at_ms=now_ms)
    tx.log("lease.released", run_id=run_id, worker_id=run.worker_id)
    return Wakeups(ready_apps=frozenset({run.app_id}))
