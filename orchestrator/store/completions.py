"""Recording what a worker reports (CompleteStep) and deciding what the run does next.

Entry point: ``complete``. It checks the lease, then one handler per outcome writes the step row,
its attempt history and the run's next scheduling state, and builds the reply."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from sqlalchemy import and_, bindparam, insert, select, update

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
    StepAttempt,
    StepError,
    StepKind,
    StepOutput,
    StepStatus,
    SuspensionEnded,
    WaitForEvent,
    WaitStatus,
    Wakeups,
)
from orchestrator.store import ingest, lost, names, txn
from orchestrator.store import schema as t
from orchestrator.store.prepared import Prepared
from orchestrator.store.txn import AnyRow, Tx

SCAN_BATCH = 500  # events per query when a new wait scans the backlog after the run's mark

_r, _s = t.runs, t.steps
# The run row, locked, with the columns of the step the completion is for (NULL when not recorded):
# one read decides every outcome, and the lock serialises completions of one run across replicas.
_RUN_AND_STEP = Prepared(
    select(
        _r,
        _s.c.kind.label("step_kind"),
        _s.c.status.label("step_status"),
        _s.c.output.label("step_output"),
        _s.c.failed_attempts.label("step_failed_attempts"),
        _s.c.wake_ms.label("step_wake_ms"),
    )
    .select_from(_r.outerjoin(_s, and_(_s.c.run_id == _r.c.id, _s.c.step_id == bindparam("step_id"))))
    .where(_r.c.id == bindparam("run_id"))
    .with_for_update(of=_r)
)
_STEP_COLUMNS = (
    "run_id", "step_id", "position", "kind", "status", "failed_attempts", "output", "error_name",
    "error_message", "error_stack", "started_ms", "ended_ms", "wake_ms", "wait_event", "wait_match",
    "resumed_by_event_id", "recorded_lease_id",
)
_INSERT_STEP = Prepared(insert(_s).values({name: bindparam(name) for name in _STEP_COLUMNS}))
_STEP_KEY = and_(_s.c.run_id == bindparam("run_id"), _s.c.step_id == bindparam("step_id"))
# A step.run recorded after failed attempts; the guard on status makes "recorded at most once" a
# property of this statement, not only of the run-row lock.
_STEP_SUCCEEDED = Prepared(
    update(_s)
    .where(_STEP_KEY, _s.c.status != StepStatus.COMPLETED)
    .values(
        status=StepStatus.COMPLETED,
        output=bindparam("output"),
        ended_ms=bindparam("ended_ms"),
        recorded_lease_id=bindparam("lease_id"),
        failed_attempts=bindparam("failed_attempts"),
        # The failed attempts keep their errors in the attempt history; the step's own error is
        # only its final one, and a step that succeeded has none.
        error_name=None,
        error_message=None,
        error_stack=None,
    )
)
_STEP_FAILED_ATTEMPT = Prepared(
    update(_s)
    .where(_STEP_KEY)
    .values(
        status=bindparam("status"),
        failed_attempts=bindparam("failed_attempts"),
        recorded_lease_id=bindparam("lease_id"),
        ended_ms=bindparam("ended_ms"),
        error_name=bindparam("error_name"),
        error_message=bindparam("error_message"),
        error_stack=bindparam("error_stack"),
    )
)
# The run goes on under the same lease: its next step's position and the extended lease; with a step
# committed, its event mark moves to the newest event.
_CONTINUE = Prepared(
    update(_r)
    .where(_r.c.id == bindparam("run_id"))
    .values(step_count=bindparam("step_count"), lease_expires_ms=bindparam("lease_expires_ms"))
)
_CONTINUE_COMMITTED = Prepared(
    update(_r)
    .where(_r.c.id == bindparam("run_id"))
    .values(
        step_count=bindparam("step_count"),
        lease_expires_ms=bindparam("lease_expires_ms"),
        event_mark=txn.NEWEST_SEQ,
    )
)
_LET_GO_WHERE = (_r.c.id == bindparam("run_id"), _r.c.lease_id == bindparam("current_lease"))


def _let_go(state: RunState, *columns: str) -> Prepared:
    """The run leaves the worker (the reply is STOP) and the lease ends: it becomes ``state`` (ready
    again later, parked on a wait, or ended), with ``columns`` set from the same-named parameters."""
    return Prepared(
        update(_r)
        .where(*_LET_GO_WHERE)
        .values(
            state=state,
            last_stop_lease_id=bindparam("current_lease"),
            step_count=bindparam("step_count"),
            lease_id=None,
            lease_expires_ms=None,
            worker_id=None,
            **{column: bindparam(column) for column in columns},
        )
    )


_LET_GO_READY = _let_go(RunState.READY, "available_at_ms", "body_attempts")
_LET_GO_PARKED = _let_go(RunState.PARKED)
_LET_GO_ENDED = _let_go(
    RunState.ENDED,
    *("body_attempts", "status", "output", "ended_ms", "error_name", "error_message", "error_stack"),
)
_RESET_LOST = Prepared(update(_r).where(_r.c.id == bindparam("run_id")).values(lost_attempts=0))
_TRIGGER = Prepared(select(t.events).where(t.events.c.seq == bindparam("seq")))
_BACKLOG = Prepared(
    select(t.events)
    .where(t.events.c.name == bindparam("name"), t.events.c.seq > bindparam("after"))
    .order_by(t.events.c.seq)
    .limit(txn.fixed_limit(SCAN_BATCH))
)
_INSERT_WAIT = Prepared(
    insert(t.waits).values(
        {
            name: bindparam(name)
            for name in (
                "run_id", "step_id", "event_name", "match_path", "match_value", "match_hash", "expires_ms",
            )
        }
        | {"status": WaitStatus.WAITING}
    )
)


def complete(tx: Tx, c: Completion, now_ms: int, lease_ms: int) -> CompletionResult:
    """Records one outcome reported under the run's current lease and decides what comes next."""
    run = _RUN_AND_STEP.run(tx, run_id=c.run_id, step_id=c.step_id).first()
    if run is None:
        raise errors.NotFound(f"run {c.run_id} not found")
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
    _RESET_LOST.run_later(tx, run_id=run.id)
    if not isinstance(outcome, StepOutput | StepError | RunFailed):
        # A sleep, a wait, a send or the run's return runs no user code that retries could bound.
        tx.log("lost_attempts.dropped", run_id=run.id, step_id=None, lost_attempts=lost_n)
    return lost_n


def _recorded(run: AnyRow, step_id: str, kind: StepKind) -> bool:
    """Whether the completion's step is already recorded (read with the run); a recorded step of
    another kind is a conflict."""
    if run.step_kind is None:
        return False
    if run.step_kind != kind:
        raise errors.StepConflict(
            f"step {step_id} of run {run.id} is recorded as a {run.step_kind} step, not a {kind} step"
        )
    return True


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
    *,
    output: str | None = None,
    failed_attempts: int = 0,
    wake_ms: int | None = None,
    wait_event: str | None = None,
    wait_match: str | None = None,
    resumed_by_event_id: str | None = None,
) -> int:
    """Records a new step at the run's next position; returns the run's new step count (the run's own
    row is written once, by whatever decides what the run does next). A step's attempt history
    gets rows only once an attempt failed: a step that needed one attempt is its own history."""
    position = _next_position(run, c.max_steps)
    started = c.started_ms or now_ms
    ended = (c.ended_ms or now_ms) if status == StepStatus.COMPLETED else None
    _INSERT_STEP.run_later(
        tx,
        run_id=run.id,
        step_id=c.step_id,
        position=position,
        kind=kind,
        status=status,
        failed_attempts=failed_attempts,
        output=output,
        error_name=None,
        error_message=None,
        error_stack=None,
        started_ms=started,
        ended_ms=ended,
        wake_ms=wake_ms,
        wait_event=wait_event,
        wait_match=wait_match,
        resumed_by_event_id=resumed_by_event_id,
        recorded_lease_id=c.lease_id,
    )
    return position + 1


def _continue_run(
    tx: Tx,
    run: AnyRow,
    now_ms: int,
    lease_ms: int,
    output_json: str,
    *,
    step_count: int | None = None,
    **reported: Any,
) -> CompletionResult:
    """The run goes on under the same lease, extended. ``step_count``: a step was just committed
    (the run's new step count), so the run's event mark moves to the newest event. ``reported``:
    more of the result (what the step's commit recorded or ended, for traces)."""
    expires = max(now_ms + lease_ms, run.lease_expires_ms or 0)
    transitions.require(RunState.LEASED, RunState.LEASED)
    statement = _CONTINUE if step_count is None else _CONTINUE_COMMITTED
    count = run.step_count if step_count is None else step_count
    statement.run_later(tx, run_id=run.id, step_count=count, lease_expires_ms=expires)
    return CompletionResult(Directive.CONTINUE, output_json, expires, **reported)


def _let_go_ready(
    tx: Tx, run: AnyRow, lease_id: str, step_count: int, ready_at_ms: int, body_attempts: int
) -> None:
    """The run leaves the worker (the reply is STOP) to be handed out again at ``ready_at_ms``."""
    transitions.require(RunState(run.state), RunState.READY)
    _LET_GO_READY.run_later(
        tx,
        run_id=run.id,
        current_lease=lease_id,
        step_count=step_count,
        available_at_ms=ready_at_ms,
        body_attempts=body_attempts,
    )


def _step_output(
    tx: Tx, run: AnyRow, c: Completion, outcome: StepOutput, now_ms: int, lease_ms: int, lost_n: int
) -> CompletionResult:
    if _recorded(run, c.step_id, StepKind.RUN) and run.step_status == StepStatus.COMPLETED:
        # Recorded already (a repeated completion, or a re-run after a lost reply): the first
        # result stands and is the answer.
        tx.log("completion.duplicate", run_id=run.id, step_id=c.step_id)
        return _continue_run(tx, run, now_ms, lease_ms, run.step_output)
    if run.step_kind is None:
        attempt = lost_n
        step_count = _insert_step(
            tx, run, c, StepKind.RUN, StepStatus.COMPLETED, now_ms, output=outcome.output_json,
            failed_attempts=lost_n,
        )
    else:
        attempt = run.step_failed_attempts + lost_n
        step_count = run.step_count
        written = _STEP_SUCCEEDED.run(
            tx,
            run_id=run.id,
            step_id=c.step_id,
            output=outcome.output_json,
            ended_ms=c.ended_ms or now_ms,
            lease_id=c.lease_id,
            failed_attempts=attempt,
        )
        if written.rowcount != 1:
            # Recorded by a concurrent completion after this transaction read the step (its read
            # predates the run-row lock it waited for): the next try sees it as a duplicate.
            raise errors.RaceLost(f"step {c.step_id} of run {run.id} was recorded concurrently")
    started, ended = c.started_ms or now_ms, c.ended_ms or now_ms
    lost_attempts = lost.record(tx, run.id, c.step_id, attempt - lost_n, lost_n, started)
    if attempt > 0:
        # After failed (or lost) attempts, which have rows: this one gets its row too.
        txn.insert_attempt(tx, run.id, c.step_id, attempt, started, ended, c.lease_id, None)
    tx.log("step.completed", run_id=run.id, step_id=c.step_id, kind=StepKind.RUN, attempt=attempt)
    return _continue_run(
        tx,
        run,
        now_ms,
        lease_ms,
        outcome.output_json,
        step_count=step_count,
        attempt=StepAttempt(attempt, started, ended, False, None),
        lost=lost_attempts,
    )


def _step_error(
    tx: Tx, run: AnyRow, c: Completion, outcome: StepError, now_ms: int, lease_ms: int, lost_n: int
) -> CompletionResult:
    recorded = _recorded(run, c.step_id, StepKind.RUN)
    if recorded and run.step_status == StepStatus.COMPLETED:
        tx.log("completion.duplicate", run_id=run.id, step_id=c.step_id)
        return _continue_run(tx, run, now_ms, lease_ms, run.step_output)
    # This attempt's number: after the failed ones and those lost with their workers.
    attempt = (run.step_failed_attempts if recorded else 0) + lost_n
    decision = retries.decide_retry(
        failed_attempts=attempt + 1,
        retries=run.retries,
        retriable=outcome.retriable,
        retry_after_ms=outcome.retry_after_ms,
        rng=tx.rng,
    )
    status = StepStatus.RUNNING if decision.retry else StepStatus.FAILED
    error = outcome.error if decision.retry else lost.exhausted_error(outcome.error, lost_n)
    step_count = run.step_count
    if not recorded:
        step_count = _insert_step(tx, run, c, StepKind.RUN, StepStatus.RUNNING, now_ms)
    _STEP_FAILED_ATTEMPT.run_later(
        tx,
        run_id=run.id,
        step_id=c.step_id,
        status=status,
        failed_attempts=attempt + 1,
        lease_id=c.lease_id,
        ended_ms=None if decision.retry else (c.ended_ms or now_ms),
        **txn.error_columns(error),
    )
    started, ended = c.started_ms or now_ms, c.ended_ms or now_ms
    lost_attempts = lost.record(tx, run.id, c.step_id, attempt - lost_n, lost_n, started)
    txn.insert_attempt(tx, run.id, c.step_id, attempt, started, ended, c.lease_id, outcome.error)
    this_attempt = StepAttempt(attempt, started, ended, True, outcome.error)
    if decision.retry:
        ready_at = now_ms + decision.delay_ms
        _let_go_ready(tx, run, c.lease_id, step_count, ready_at, run.body_attempts)
        tx.log(
            "step.retry_scheduled",
            run_id=run.id,
            step_id=c.step_id,
            attempt=attempt,
            delay_ms=decision.delay_ms,
            error=outcome.error.name,
        )
        wakeups = _wakeups_at(run, ready_at, now_ms)
        return CompletionResult(Directive.STOP, wakeups=wakeups, attempt=this_attempt, lost=lost_attempts)
    tx.log(
        "step.failed",
        run_id=run.id,
        step_id=c.step_id,
        attempts=attempt + 1,
        retriable=outcome.retriable,
        error=outcome.error.name,
        lost_attempts=lost_n,
    )
    _end_run(tx, run, c.lease_id, RunStatus.FAILED, now_ms, step_count=step_count, error=error)
    return CompletionResult(Directive.STOP, attempt=this_attempt, lost=lost_attempts, run_ended=True)


def _wakeups_at(run: AnyRow, ready_at_ms: int, now_ms: int) -> Wakeups:
    if ready_at_ms <= now_ms:
        return Wakeups(ready_apps=frozenset({run.app_id}))
    return Wakeups(deadline_ms=ready_at_ms)


def _sleep(
    tx: Tx, run: AnyRow, c: Completion, outcome: Sleep, now_ms: int, lease_ms: int
) -> CompletionResult:
    recorded = _recorded(run, c.step_id, StepKind.SLEEP)
    if recorded and run.step_status == StepStatus.COMPLETED:
        return _continue_run(tx, run, now_ms, lease_ms, "null")
    # A sleep already recorded keeps its wake time (_sleep(timedelta) would compute another).
    until = run.step_wake_ms if recorded else outcome.until_ms
    if until <= now_ms:
        if not recorded:
            step_count = _insert_step(
                tx, run, c, StepKind.SLEEP, StepStatus.COMPLETED, now_ms, output="null", wake_ms=until
            )
        else:
            step_count = run.step_count
            txn.SLEEP_ELAPSED.run_later(tx, run_id=run.id, step_id=c.step_id, ended_ms=now_ms)
        tx.log("step.completed", run_id=run.id, step_id=c.step_id, kind=StepKind.SLEEP)
        result = _continue_run(tx, run, now_ms, lease_ms, "null", step_count=step_count)
        return dataclasses.replace(result, ended=(SuspensionEnded(run.id, c.step_id),))
    step_count = run.step_count
    if not recorded:
        step_count = _insert_step(tx, run, c, StepKind.SLEEP, StepStatus.SLEEPING, now_ms, wake_ms=until)
    # A sleeping run is simply ready in the future: the claim that takes it after ``until``
    # completes the sleep step.
    _let_go_ready(tx, run, c.lease_id, step_count, until, run.body_attempts)
    tx.log("step.sleeping", run_id=run.id, step_id=c.step_id, until=clock.from_ms(until).isoformat())
    return CompletionResult(Directive.STOP, wakeups=Wakeups(deadline_ms=until))


def _wait(
    tx: Tx, run: AnyRow, c: Completion, outcome: WaitForEvent, now_ms: int, lease_ms: int
) -> CompletionResult:
    if _recorded(run, c.step_id, StepKind.WAIT_FOR_EVENT):
        if run.step_status == StepStatus.COMPLETED:
            return _continue_run(tx, run, now_ms, lease_ms, run.step_output)
        raise errors.FailedPrecondition(f"step {c.step_id} of run {run.id} is already waiting")
    trigger = _TRIGGER.run(tx, seq=run.event_seq).one()
    trigger_obj = matching.event_object(trigger.id, trigger.name, trigger.data, trigger.ts_ms)
    value = matching.match_value(trigger_obj, outcome.match)
    tx.dialect.lock_for_wait_registration(tx, outcome.event)
    found = _find_backlog_event(tx, outcome, value, run.event_mark)
    if found is not None or outcome.timeout_ms <= now_ms:
        output = (
            matching.event_output_json(found.id, found.name, found.data_json, found.ts_ms)
            if found is not None
            else "null"
        )
        step_count = _insert_step(
            tx,
            run,
            c,
            StepKind.WAIT_FOR_EVENT,
            StepStatus.COMPLETED,
            now_ms,
            output=output,
            resumed_by_event_id=found.id if found else None,
            wake_ms=outcome.timeout_ms,
            wait_event=outcome.event,
            wait_match=outcome.match,
        )
        if found is not None:
            tx.log("wait.matched", run_id=run.id, step_id=c.step_id, event_id=found.id, backlog=True)
        else:
            tx.log("wait.timed_out", run_id=run.id, step_id=c.step_id)
        result = _continue_run(tx, run, now_ms, lease_ms, output, step_count=step_count)
        return dataclasses.replace(result, ended=(SuspensionEnded(run.id, c.step_id),))
    step_count = _insert_step(
        tx,
        run,
        c,
        StepKind.WAIT_FOR_EVENT,
        StepStatus.WAITING,
        now_ms,
        wake_ms=outcome.timeout_ms,
        wait_event=outcome.event,
        wait_match=outcome.match,
    )
    _INSERT_WAIT.run_later(
        tx,
        run_id=run.id,
        step_id=c.step_id,
        event_name=outcome.event,
        match_path=outcome.match,
        match_value=value,
        match_hash=txn.hash_value(value),
        expires_ms=outcome.timeout_ms,
    )
    names.wait_added(tx, outcome.event, outcome.match)
    transitions.require(RunState(run.state), RunState.PARKED)
    _LET_GO_PARKED.run_later(tx, run_id=run.id, current_lease=c.lease_id, step_count=step_count)
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
    after, scanned = mark, 0
    while scanned < limits.MAX_WAIT_BACKLOG_SCAN:
        rows = _BACKLOG.run(tx, name=outcome.event, after=after).all()
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
    if _recorded(run, c.step_id, StepKind.SEND_EVENT):
        # Sent already: exactly once, whatever the worker retries.
        tx.log("completion.duplicate", run_id=run.id, step_id=c.step_id)
        return _continue_run(tx, run, now_ms, lease_ms, run.step_output)
    ingested = ingest.ingest(tx, outcome.events, now_ms) if outcome.events else IngestResult((), ())
    output = json.dumps(list(ingested.ids))
    step_count = _insert_step(tx, run, c, StepKind.SEND_EVENT, StepStatus.COMPLETED, now_ms, output=output)
    tx.log(
        "step.completed",
        run_id=run.id,
        step_id=c.step_id,
        kind=StepKind.SEND_EVENT,
        events=len(ingested.ids),
    )
    result = _continue_run(tx, run, now_ms, lease_ms, output, step_count=step_count)
    this_attempt = StepAttempt(0, c.started_ms or now_ms, c.ended_ms or now_ms, False, None)
    return dataclasses.replace(result, wakeups=ingested.wakeups, attempt=this_attempt, ended=ingested.ended)


def _run_completed(
    tx: Tx, run: AnyRow, c: Completion, outcome: RunCompleted, now_ms: int
) -> CompletionResult:
    _end_run(tx, run, c.lease_id, RunStatus.COMPLETED, now_ms, output=outcome.output_json)
    return CompletionResult(Directive.STOP, run_ended=True)


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
        _let_go_ready(tx, run, c.lease_id, run.step_count, ready_at, attempt + 1)
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
    return CompletionResult(Directive.STOP, run_ended=True)


def _end_run(
    tx: Tx,
    run: AnyRow,
    lease_id: str,
    status: RunStatus,
    now_ms: int,
    *,
    step_count: int | None = None,
    output: str | None = None,
    error: ErrorInfo | None = None,
    body_attempts: int | None = None,
) -> None:
    txn.cancel_waits(tx, run.id)
    transitions.require(RunState(run.state), RunState.ENDED)
    _LET_GO_ENDED.run_later(
        tx,
        run_id=run.id,
        current_lease=lease_id,
        step_count=run.step_count if step_count is None else step_count,
        body_attempts=run.body_attempts if body_attempts is None else body_attempts,
        status=status,
        output=output,
        ended_ms=now_ms,
        error_name=error.name if error else None,
        error_message=error.message if error else None,
        error_stack=error.stack if error else None,
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
