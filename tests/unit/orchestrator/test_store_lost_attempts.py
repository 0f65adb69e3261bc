"""An attempt lost with its worker (the lease expired while user code ran) is a used attempt: a step's
user code starts at most retries+1 times, counting the executions dead workers began. A clean
ReleaseWork does not count. On each database; time is driven explicitly through ``now_ms``."""

from __future__ import annotations

import json

from orchestrator.engine.model import (
    Completion,
    Directive,
    ErrorInfo,
    FunctionSpec,
    NewEvent,
    RunFailed,
    RunStatus,
    Sleep,
    StepError,
    StepOutput,
    StepStatus,
    WorkItem,
)
from orchestrator.store.sql import SqlStore

T0 = 1_800_000_000_000  # a fixed "now", Unix ms
LEASE = 30_000
HOUR = 3_600_000  # later than any backoff of these tests
LOST = ErrorInfo("AttemptLost", "the worker stopped responding during the attempt (lease expired)")


def start(store: SqlStore, *, retries: int) -> str:
    store.register_functions("crm", [FunctionSpec("f", ("a/b",), retries)], now_ms=T0)
    (run_id,) = store.ingest_events([NewEvent("a/b", json.dumps({}), None)], now_ms=T0).run_ids
    return run_id


def claim_one(store: SqlStore, *, now: int) -> WorkItem:
    items = store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=10, now_ms=now, lease_ms=LEASE
    ).items
    assert len(items) == 1, items
    return items[0]


def lose(store: SqlStore, *, now: int) -> WorkItem:
    """Claims the run at ``now`` and lets its worker die: the lease expires unextended."""
    item = claim_one(store, now=now)
    assert store.fire_due_timers(now_ms=now + LEASE, since_ms=now).expired_leases == 1
    return item


def complete(store: SqlStore, item: WorkItem, step_id: str, outcome, *, now: int):
    return store.complete_step(
        Completion(item.run_id, item.lease_id, step_id, outcome), now_ms=now, lease_ms=LEASE
    )


def boom() -> StepError:
    return StepError(ErrorInfo("ValueError", "boom", "Traceback ..."), True, 0)


def test_a_lost_attempt_counts_when_the_step_then_succeeds(store: SqlStore) -> None:
    run_id = start(store, retries=4)
    lose(store, now=T0)
    item = claim_one(store, now=T0 + LEASE)
    assert item.attempt == 1  # what the SDK shows as ctx.attempt
    assert (
        complete(store, item, "enrich", StepOutput('"ok"'), now=T0 + LEASE + 1).directive
        == Directive.CONTINUE
    )
    # The counter was charged to enrich and reset: the next step starts fresh.
    complete(store, item, "notify", StepOutput("1"), now=T0 + LEASE + 2)
    enrich, notify = store.get_run(run_id).steps
    assert enrich.status == StepStatus.COMPLETED and enrich.attempts == 2
    assert [(a.attempt, a.failed, a.error) for a in enrich.history] == [(0, True, LOST), (1, False, None)]
    assert notify.attempts == 1


def test_lost_attempts_add_to_failed_ones(store: SqlStore) -> None:
    run_id = start(store, retries=4)
    item = claim_one(store, now=T0)
    assert complete(store, item, "enrich", boom(), now=T0 + 1).directive == Directive.STOP
    lose(store, now=T0 + HOUR)
    item = claim_one(store, now=T0 + HOUR + LEASE)
    assert item.attempt == 2
    assert complete(store, item, "enrich", boom(), now=T0 + HOUR + LEASE + 1).directive == Directive.STOP
    enrich = store.get_run(run_id).steps[0]
    assert enrich.status == StepStatus.RUNNING
    assert [(a.attempt, a.error.name if a.error else None) for a in enrich.history] == [
        (0, "ValueError"),
        (1, "AttemptLost"),
        (2, "ValueError"),
    ]
    assert claim_one(store, now=T0 + 2 * HOUR).attempt == 3


def test_with_one_retry_two_lost_attempts_fail_the_run(store: SqlStore) -> None:
    run_id = start(store, retries=1)
    lose(store, now=T0)
    lose(store, now=T0 + LEASE)  # the second expiry: a third start would exceed retries+1
    run = store.get_run(run_id)
    assert run.status == RunStatus.FAILED
    assert run.error is not None and run.error.name == "AttemptLost"
    assert "2 attempts lost with their workers" in run.error.message
    assert (
        store.claim_work(
            app_id="crm", function_ids=(), worker_id="w", max_items=10, now_ms=T0 + HOUR, lease_ms=LEASE
        ).items
        == ()
    )


def test_with_one_retry_a_failure_then_a_lost_attempt_fail_the_run_and_the_step(store: SqlStore) -> None:
    run_id = start(store, retries=1)
    item = claim_one(store, now=T0)
    complete(store, item, "enrich", boom(), now=T0 + 1)
    lose(store, now=T0 + HOUR)
    run = store.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.error is not None and run.error.name == "AttemptLost"
    enrich = run.steps[0]
    assert enrich.status == StepStatus.FAILED and enrich.attempts == 2
    assert [a.failed for a in enrich.history] == [True, True]


def test_with_one_retry_a_lost_attempt_then_an_error_fail_the_run(store: SqlStore) -> None:
    run_id = start(store, retries=1)
    lose(store, now=T0)
    item = claim_one(store, now=T0 + LEASE)
    assert item.attempt == 1
    assert complete(store, item, "enrich", boom(), now=T0 + LEASE + 1).directive == Directive.STOP
    run = store.get_run(run_id)
    assert run.status == RunStatus.FAILED
    assert run.error == ErrorInfo("ValueError", "boom (1 attempts lost with their workers)", "Traceback ...")
    enrich = run.steps[0]
    assert enrich.status == StepStatus.FAILED and enrich.attempts == 2
    assert [a.error.name if a.error else None for a in enrich.history] == ["AttemptLost", "ValueError"]


def test_a_lost_attempt_counts_against_the_body_when_the_run_fails(store: SqlStore) -> None:
    run_id = start(store, retries=1)
    lose(store, now=T0)
    item = claim_one(store, now=T0 + LEASE)
    failed = RunFailed(ErrorInfo("KeyError", "x", ""), True, 0)
    assert complete(store, item, "", failed, now=T0 + LEASE + 1).directive == Directive.STOP
    assert store.get_run(run_id).status == RunStatus.FAILED


def test_a_released_attempt_is_not_counted(store: SqlStore) -> None:
    run_id = start(store, retries=1)
    for i in range(3):  # more releases than retries allow attempts
        item = claim_one(store, now=T0 + i)
        assert item.attempt == 0
        store.release_work(run_id, item.lease_id, now_ms=T0 + i)
    item = claim_one(store, now=T0 + 10)
    assert item.attempt == 0
    complete(store, item, "enrich", StepOutput("1"), now=T0 + 11)
    run = store.get_run(run_id)
    assert run.status == RunStatus.RUNNING and run.steps[0].attempts == 1


def test_lost_attempts_before_a_sleep_are_dropped(store: SqlStore) -> None:
    run_id = start(store, retries=4)
    lose(store, now=T0)
    item = claim_one(store, now=T0 + LEASE)
    complete(store, item, "nap", Sleep(until_ms=T0 + LEASE), now=T0 + LEASE + 1)  # already over
    complete(store, item, "enrich", StepOutput("1"), now=T0 + LEASE + 2)
    nap, enrich = store.get_run(run_id).steps
    assert nap.status == StepStatus.COMPLETED and enrich.attempts == 1
