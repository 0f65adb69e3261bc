"""Recording what a worker reports (CompleteStep) and deciding what the run does next.

Entry point: ``complete``. It checks the lease, then one handler per outcome writes the step row,
its attempt history and the run's next scheduling state, and builds the reply."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert, select, update

from orchestrator import clock, errors
from orchestrator.engine import limits, matching, retries, transitions
from orchestrator.engine.model import (
    Completion,
    CompletionResult,
    Directive,
    ErrorInfo,
    EventRecord,
    IngestResult,
    RunCompleted,
    RunFailed,
    RunState,
    RunStatus,
    SendEvents,
    Sleep,
    StepError,
    StepKind,
    StepOutput,
    StepStatus,
    WaitForEvent,
    WaitStatus,
    Wakeups,
)
from orchestrator.store import ingest, lost, txn
from orchestrator.store import schema as t
from orchestrator.store.txn import AnyRow, Tx

SCAN_BATCH = 500  # events per query when a new wait scans the backlog after the run's mark


def complete(tx: Tx, c: Completion, now_ms: int, lease_ms: int) -> CompletionResult:
    """Records one outcome reported under the run's current lease and decides what comes next."""
    run = txn.locked_run(tx, c.run_id)
    if run.lease_id != c.lease_id:
        if run.last_stop_lease_id == c.lease_id:
            # A repeat of the completion that let the run go (its reply was lost): same answer.
            tx.log("completion.duplicate", run_id=run.id, step_id=c.step_id or None)
            return CompletionResult(Directive.STOP)
        raise txn.not_current(run, c.lease_id)
    outcome = c.outcome
    lost_n = _take_lost_attempts(tx, run, outcome)
    if isinstance(outcome, StepOutput):
        return _step_output(tx, run, c, outcome, now_ms, lease_ms, lost_n)
    if isinstance(outcome, StepError):
        return _step_error(tx, run, c, outcome, now_ms, lease_ms, lost_n)
    if isinstance(outcome, Sleep):
        return _sleep(tx, run, c, outcome, now_ms, lease_ms)
    if isinstance(outcome, WaitForEvent):
        return _wait(tx, run, c, outcome, now_ms, lease_ms)
    if isinstance(outcome, SendEvents):
        return _send_events(tx, run, c, outcome, now_ms, lease_ms)
    if isinstance(outcome, RunCompleted):
        return _run_completed(tx, run, c, outcome, now_ms)
    return _run_failed(tx, run, c, outcome, now_ms, lost_n)


def _take_lost_attempts(tx: Tx, run: AnyRow, outcome: object) -> int:
    """The attempts lost with their workers since the run's last outcome, reset to 0: this outcome
    is the in-flight code's, which is charged with them (see ``orchestrator.store.lost``)."""
    lost_n = int(run.lost_attempts)
    if lost_n == 0:
        return 0
    tx.conn.execute(update(t.runs).where(t.runs.c.id == run.id).values(lost_attempts=0))
    if not isinstance(outcome, StepOutput | StepError | RunFailed):
        # A sleep, a wait, a send or the run's return runs no user code that retries could bound.
        tx.log("lost_attempts.dropped", run_id=run.id, step_id=None, lost_attempts=lost_n)
    return lost_n


def _existing_step(tx: Tx, run: AnyRow, step_id: str, kind: StepKind) -> AnyRow | None:
    s = t.steps
    step = tx.conn.execute(select(s).where(s.c.run_id == run.id, s.c.step_id == step_id)).first()
    if step is not None and step.kind != kind:
        raise errors.StepConflict(
            f"step {step_id} of run {run.id} is recorded as a {step.kind} step, not a {kind} step"
        )
    return step


def _next_position(run: AnyRow, max_steps: int) -> int:
    if run.step_count >= max_steps:
        raise errors.LimitExceeded(
            f"step_id: run {run.id} already has {run.step_count} steps, the limit (max_steps_per_run) "
            f"is {max_steps}"
        )
    return int(run.step_count)


def _insert_step(
    tx: Tx,
    run: AnyRow,
    c: Completion,
    kind: StepKind,
    status: StepStatus,
    now_ms: int,
    **values: Any,
) -> None:
    position = _next_position(run, c.max_steps)
    started = c.started_ms or now_ms
    ended = (c.ended_ms or now_ms) if status == StepStatus.COMPLETED else None
    tx.conn.execute(
        insert(t.steps).values(
            run_id=run.id,
            step_id=c.step_id,
            position=position,
            kind=kind,
            status=status,
            failed_attempts=0,
            started_ms=started,
            ended_ms=ended,
            recorded_lease_id=c.lease_id,
            **values,
        )
    )
    tx.conn.execute(update(t.runs).where(t.runs.c.id == run.id).values(step_count=t.runs.c.step_count + 1))
    if kind != StepKind.RUN:
        # Sleeps, waits and sends have exactly one attempt; it ends when the step completes.
        txn.insert_attempt(tx, run.id, c.step_id, 0, started, ended, c.lease_id, None)


def _continue_run(
    tx: Tx, run: AnyRow, now_ms: int, lease_ms: int, output_json: str, *, committed: bool
) -> CompletionResult:
    """The run goes on under the same lease, extended. ``committed``: a step was just
    committed, so the run's event mark moves to the newest event."""
    r = t.runs
    expires = max(now_ms + lease_ms, run.lease_expires_ms or 0)
    values: dict[str, Any] = {"lease_expires_ms": expires}
    if committed:
        values["event_mark"] = txn.max_seq(tx)
    transitions.require(RunState.LEASED, RunState.LEASED)
    tx.conn.execute(update(r).where(r.c.id == run.id).values(**values))
    return CompletionResult(Directive.CONTINUE, output_json, expires)


def _let_go(tx: Tx, run: AnyRow, lease_id: str, state: RunState, **values: Any) -> None:
    """The run leaves the worker (the reply is STOP): it becomes ``state`` and the lease ends."""
    r = t.runs
    transitions.require(RunState(run.state), state)
    tx.conn.execute(
        update(r)
        .where(r.c.id == run.id, r.c.lease_id == lease_id)
        .values(
            state=state,
            lease_id=None,
            lease_expires_ms=None,
            worker_id=None,
            last_stop_lease_id=lease_id,
            **values,
        )
    )


def _step_output(
    tx: Tx, run: AnyRow, c: Completion, outcome: StepOutput, now_ms: int, lease_ms: int, lost_n: int
) -> CompletionResult:
    s = t.steps
    step = _existing_step(tx, run, c.step_id, StepKind.RUN)
    if step is not None and step.status == StepStatus.COMPLETED:
        # Recorded already (a repeated completion, or a re-run after a lost reply): the first
        # result stands and is the answer.
        tx.log("completion.duplicate", run_id=run.id, step_id=c.step_id)
        return _continue_run(tx, run, now_ms, lease_ms, step.output, committed=False)
    if step is None:
        _insert_step(tx, run, c, StepKind.RUN, StepStatus.COMPLETED, now_ms, output=outcome.output_json)
        attempt = lost_n
        if lost_n:
            tx.conn.execute(
                update(s).where(s.c.run_id == run.id, s.c.step_id == c.step_id).values(failed_attempts=lost_n)
            )
    else:
        attempt = step.failed_attempts + lost_n
        # The guard on status makes "recorded at most once" a property of this statement, not only of
        # the run-row lock above (the insert branch has the primary key for that).
        written = tx.conn.execute(
            update(s)
            .where(s.c.run_id == run.id, s.c.step_id == c.step_id, s.c.status != StepStatus.COMPLETED)
            .values(
                status=StepStatus.COMPLETED,
                output=outcome.output_json,
                ended_ms=c.ended_ms or now_ms,
                recorded_lease_id=c.lease_id,
                failed_attempts=attempt,
                # The failed attempts keep their errors in the attempt history; the step's own
                # error is only its final one, and a step that succeeded has none.
                error_name=None,
                error_message=None,
                error_stack=None,
            )
        )
        if written.rowcount != 1:
            raise errors.StepConflict(f"step {c.step_id} of run {run.id} was recorded concurrently")
    lost.record(tx, run.id, c.step_id, attempt - lost_n, lost_n, c.started_ms or now_ms)
    txn.insert_attempt(
        tx, run.id, c.step_id, attempt, c.started_ms or now_ms, c.ended_ms or now_ms, c.lease_id, None
    )
    tx.log("step.completed", run_id=run.id, step_id=c.step_id, kind=StepKind.RUN, attempt=attempt)
    return _continue_run(tx, run, now_ms, lease_ms, outcome.output_json, committed=True)


def _step_error(
    tx: Tx, run: AnyRow, c: Completion, outcome: StepError, now_ms: int, lease_ms: int, lost_n: int
) -> CompletionResult:
    s = t.steps
    step = _existing_step(tx, run, c.step_id, StepKind.RUN)
    if step is not None and step.status == StepStatus.COMPLETED:
        tx.log("completion.duplicate", run_id=run.id, step_id=c.step_id)
        return _continue_run(tx, run, now_ms, lease_ms, step.output, committed=False)
    # This attempt's number: after the failed ones and those lost with their workers.
    attempt = (step.failed_attempts if step is not None else 0) + lost_n
    decision = retries.decide_retry(
        failed_attempts=attempt + 1,
        retries=run.retries,
        retriable=outcome.retriable,
        retry_after_ms=outcome.retry_after_ms,
        rng=tx.rng,
    )
    status = StepStatus.RUNNING if decision.retry else StepStatus.FAILED
    error = outcome.error if decision.retry else lost.exhausted_error(outcome.error, lost_n)
    columns = {
        "status": status,
        "failed_attempts": attempt + 1,
        "recorded_lease_id": c.lease_id,
        "ended_ms": None if decision.retry else (c.ended_ms or now_ms),
        **txn.error_columns(error),
    }
    if step is None:
        _insert_step(tx, run, c, StepKind.RUN, StepStatus.RUNNING, now_ms)
    tx.conn.execute(update(s).where(s.c.run_id == run.id, s.c.step_id == c.step_id).values(**columns))
    lost.record(tx, run.id, c.step_id, attempt - lost_n, lost_n, c.started_ms or now_ms)
    txn.insert_attempt(
        tx,
        run.id,
        c.step_id,
        attempt,
        c.started_ms or now_ms,
        c.ended_ms or now_ms,
        c.lease_id,
        outcome.error,
    )
    if decision.retry:
        ready_at = now_ms + decision.delay_ms
        _let_go(tx, run, c.lease_id, RunState.READY, available_at_ms=ready_at)
        tx.log(
            "step.retry_scheduled",
            run_id=run.id,
            step_id=c.step_id,
            attempt=attempt,
            delay_ms=decision.delay_ms,
            error=outcome.error.name,
        )
        return CompletionResult(Directive.STOP, wakeups=_wakeups_at(run, ready_at, now_ms))
    tx.log(
        "step.failed",
        run_id=run.id,
        step_id=c.step_id,
        attempts=attempt + 1,
        retriable=outcome.retriable,
        error=outcome.error.name,
        lost_attempts=lost_n,
    )
    _end_run(tx, run, c.lease_id, RunStatus.FAILED, now_ms, error=error)
    return CompletionResult(Directive.STOP)


def _wakeups_at(run: AnyRow, ready_at_ms: int, now_ms: int) -> Wakeups:
    if ready_at_ms <= now_ms:
        return Wakeups(ready_apps=frozenset({run.app_id}))
    return Wakeups(deadline_ms=ready_at_ms)


def _sleep(
    tx: Tx, run: AnyRow, c: Completion, outcome: Sleep, now_ms: int, lease_ms: int
) -> CompletionResult:
    s = t.steps
    step = _existing_step(tx, run, c.step_id, StepKind.SLEEP)
    if step is not None and step.status == StepStatus.COMPLETED:
        return _continue_run(tx, run, now_ms, lease_ms, "null", committed=False)
    # A sleep already recorded keeps its wake time (_sleep(timedelta) would compute another).
    until = step.wake_ms if step is not None else outcome.until_ms
    if until <= now_ms:
        if step is None:
            _insert_step(
                tx, run, c, StepKind.SLEEP, StepStatus.COMPLETED, now_ms, output="null", wake_ms=until
            )
        else:
            tx.conn.execute(
                update(s)
                .where(s.c.run_id == run.id, s.c.step_id == c.step_id)
                .values(status=StepStatus.COMPLETED, output="null", ended_ms=now_ms)
            )
            txn.end_attempt(tx, run.id, c.step_id, now_ms)
        tx.log("step.completed", run_id=run.id, step_id=c.step_id, kind=StepKind.SLEEP)
        return _continue_run(tx, run, now_ms, lease_ms, "null", committed=True)
    if step is None:
        _insert_step(tx, run, c, StepKind.SLEEP, StepStatus.SLEEPING, now_ms, wake_ms=until)
    # A sleeping run is simply ready in the future: the claim that takes it after ``until``
    # completes the sleep step.
    _let_go(tx, run, c.lease_id, RunState.READY, available_at_ms=until)
    tx.log("step.sleeping", run_id=run.id, step_id=c.step_id, until=clock.from_ms(until).isoformat())
    return CompletionResult(Directive.STOP, wakeups=Wakeups(deadline_ms=until))


def _wait(
    tx: Tx, run: AnyRow, c: Completion, outcome: WaitForEvent, now_ms: int, lease_ms: int
) -> CompletionResult:
    step = _existing_step(tx, run, c.step_id, StepKind.WAIT_FOR_EVENT)
    if step is not None:
        if step.status == StepStatus.COMPLETED:
            return _continue_run(tx, run, now_ms, lease_ms, step.output, committed=False)
        raise errors.FailedPrecondition(f"step {c.step_id} of run {run.id} is already waiting")
    trigger = txn.events_by_seq(tx, [run.event_seq])[run.event_seq]
    trigger_obj = matching.event_object(trigger.id, trigger.name, trigger.data_json, trigger.ts_ms)
    value = matching.match_value(trigger_obj, outcome.match)
    wait_columns = {
        "wake_ms": outcome.timeout_ms,
        "wait_event": outcome.event,
        "wait_match": outcome.match,
    }
    tx.dialect.lock_for_wait_registration(tx.conn, outcome.event)
    found = _find_backlog_event(tx, outcome, value, run.event_mark)
    if found is not None or outcome.timeout_ms <= now_ms:
        output = (
            matching.event_output_json(found.id, found.name, found.data_json, found.ts_ms)
            if found is not None
            else "null"
        )
        _insert_step(
            tx,
            run,
            c,
            StepKind.WAIT_FOR_EVENT,
            StepStatus.COMPLETED,
            now_ms,
            output=output,
            resumed_by_event_id=found.id if found else None,
            **wait_columns,
        )
        if found is not None:
            tx.log("wait.matched", run_id=run.id, step_id=c.step_id, event_id=found.id, backlog=True)
        else:
            tx.log("wait.timed_out", run_id=run.id, step_id=c.step_id)
        return _continue_run(tx, run, now_ms, lease_ms, output, committed=True)
    _insert_step(tx, run, c, StepKind.WAIT_FOR_EVENT, StepStatus.WAITING, now_ms, **wait_columns)
    tx.conn.execute(
        insert(t.waits).values(
            run_id=run.id,
            step_id=c.step_id,
            event_name=outcome.event,
            match_path=outcome.match,
            match_value=value,
            match_hash=txn.hash_value(value),
            expires_ms=outcome.timeout_ms,
            status=WaitStatus.WAITING,
        )
    )
    _let_go(tx, run, c.lease_id, RunState.PARKED)
    tx.log(
        "step.waiting",
        run_id=run.id,
        step_id=c.step_id,
        event=outcome.event,
        match=outcome.match or None,
        timeout=clock.from_ms(outcome.timeout_ms).isoformat(),
    )
    return CompletionResult(Directive.STOP, wakeups=Wakeups(deadline_ms=outcome.timeout_ms))


def _find_backlog_event(tx: Tx, outcome: WaitForEvent, value: str | None, mark: int) -> EventRecord | None:
    """The first event of the awaited name after the run's mark whose match value equals the
    trigger's (a bounded scan: the backlog since the run's last step is normally tiny)."""
    if value is None:
        return None
    e = t.events
    after, scanned = mark, 0
    while scanned < limits.MAX_WAIT_BACKLOG_SCAN:
        rows = tx.conn.execute(
            select(e).where(e.c.name == outcome.event, e.c.seq > after).order_by(e.c.seq).limit(SCAN_BATCH)
        ).all()
        for row in rows:
            record = EventRecord(row.seq, row.id, row.name, row.data, row.ts_ms)
            obj = matching.event_object(record.id, record.name, record.data_json, record.ts_ms)
            if matching.match_value(obj, outcome.match) == value:
                return record
        if len(rows) < SCAN_BATCH:
            return None
        after, scanned = rows[-1].seq, scanned + len(rows)
    return None


def _send_events(
    tx: Tx, run: AnyRow, c: Completion, outcome: SendEvents, now_ms: int, lease_ms: int
) -> CompletionResult:
    step = _existing_step(tx, run, c.step_id, StepKind.SEND_EVENT)
    if step is not None:
        # Sent already: exactly once, whatever the worker retries.
        tx.log("completion.duplicate", run_id=run.id, step_id=c.step_id)
        return _continue_run(tx, run, now_ms, lease_ms, step.output, committed=False)
    ingested = ingest.ingest(tx, outcome.events, now_ms) if outcome.events else IngestResult((), ())
    output = json.dumps(list(ingested.ids))
    _insert_step(tx, run, c, StepKind.SEND_EVENT, StepStatus.COMPLETED, now_ms, output=output)
    tx.log(
        "step.completed",
        run_id=run.id,
        step_id=c.step_id,
        kind=StepKind.SEND_EVENT,
        events=len(ingested.ids),
    )
    result = _continue_run(tx, run, now_ms, lease_ms, output, committed=True)
    return CompletionResult(result.directive, result.output_json, result.lease_expires_ms, ingested.wakeups)


def _run_completed(
    tx: Tx, run: AnyRow, c: Completion, outcome: RunCompleted, now_ms: int
) -> CompletionResult:
    _end_run(tx, run, c.lease_id, RunStatus.COMPLETED, now_ms, output=outcome.output_json)
    return CompletionResult(Directive.STOP)


def _run_failed(
    tx: Tx, run: AnyRow, c: Completion, outcome: RunFailed, now_ms: int, lost_n: int
) -> CompletionResult:
    # Attempts lost while code outside steps ran count against the body's own attempts.
    attempt = run.body_attempts + lost_n
    decision = retries.decide_retry(
        failed_attempts=attempt + 1,
        retries=run.retries,
        retriable=outcome.retriable,
        retry_after_ms=outcome.retry_after_ms,
        rng=tx.rng,
    )
    if decision.retry:
        ready_at = now_ms + decision.delay_ms
        _let_go(tx, run, c.lease_id, RunState.READY, available_at_ms=ready_at, body_attempts=attempt + 1)
        tx.log(
            "run.retry_scheduled",
            run_id=run.id,
            attempt=attempt,
            delay_ms=decision.delay_ms,
            error=outcome.error.name,
        )
        return CompletionResult(Directive.STOP, wakeups=_wakeups_at(run, ready_at, now_ms))
    _end_run(
        tx,
        run,
        c.lease_id,
        RunStatus.FAILED,
        now_ms,
        error=lost.exhausted_error(outcome.error, lost_n),
        body_attempts=attempt + 1,
    )
    return CompletionResult(Directive.STOP)


def _end_run(
    tx: Tx,
    run: AnyRow,
    lease_id: str,
    status: RunStatus,
    now_ms: int,
    *,
    output: str | None = None,
    error: ErrorInfo | None = None,
    **values: Any,
) -> None:
    txn.cancel_waits(tx, run.id)
    _let_go(
        tx,
        run,
        lease_id,
        RunState.ENDED,
        status=status,
        output=output,
        ended_ms=now_ms,
        **(txn.error_columns(error) if error else {}),
        **values,
    )
    duration_ms = now_ms - run.created_ms
    if status == RunStatus.COMPLETED:
        tx.log("run.completed", run_id=run.id, function_id=run.function_id, duration_ms=duration_ms)
    else:
        tx.log(
            "run.failed",
            run_id=run.id,
            function_id=run.function_id,
            error=error.name if error else None,
            message=error.message if error else None,
            duration_ms=duration_ms,
        )
