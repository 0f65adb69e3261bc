"""A run's step history (``store.runs._step_views``) on both databases: a step that needed one
attempt has no attempt rows of its own, and its history is synthesised from the step; a step that
failed has a row per attempt, and its history is every attempt, with times and errors."""

from __future__ import annotations

from typing import Any

from orchestrator.engine.model import (
    Completion,
    ErrorInfo,
    FunctionSpec,
    NewEvent,
    RunFilter,
    RunStatus,
    SendEvents,
    Sleep,
    StepAttempt,
    StepError,
    StepOutput,
    StepStatus,
    StepView,
    WorkItem,
)
from orchestrator.store.sql import SqlStore

T0 = 1_800_000_000_000
LEASE = 30_000
HOUR = 3_600_000


def start(store: SqlStore, *, retries: int = 4, event_id: str = "e1") -> WorkItem:
    store.register_functions("crm", [FunctionSpec("f", ("a/b",), retries)], now_ms=T0)
    (run_id,) = store.ingest_events([NewEvent("a/b", "{}", event_id)], now_ms=T0).run_ids
    return claim(store, run_id, now=T0)


def claim(store: SqlStore, run_id: str, *, now: int) -> WorkItem:
    items = store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=10, now_ms=now, lease_ms=LEASE
    ).items
    (item,) = [i for i in items if i.run_id == run_id]
    return item


def complete(
    store: SqlStore, item: WorkItem, step_id: str, outcome: Any, *, now: int, started: int = 0, ended: int = 0
) -> Any:
    completion = Completion(item.run_id, item.lease_id, step_id, outcome, started_ms=started, ended_ms=ended)
    return store.complete_step(completion, now_ms=now, lease_ms=LEASE)


def failure(message: str) -> StepError:
    return StepError(ErrorInfo("ValueError", message, "Traceback ..."), retriable=True)


def steps_by_id(store: SqlStore, run_id: str) -> dict[str, StepView]:
    return {step.id: step for step in store.get_run(run_id).steps}


def test_a_step_that_succeeded_at_its_first_attempt_shows_one_attempt_with_its_times(
    store: SqlStore,
) -> None:
    item = start(store)
    complete(store, item, "fetch", StepOutput('"ok"'), now=T0 + 30, started=T0 + 10, ended=T0 + 25)
    complete(store, item, "untimed", StepOutput("1"), now=T0 + 40)  # no times reported: the server's
    steps = steps_by_id(store, item.run_id)
    fetch, untimed = steps["fetch"], steps["untimed"]
    assert fetch.history == (StepAttempt(0, T0 + 10, T0 + 25, failed=False, error=None),)
    assert (fetch.attempts, fetch.status, fetch.started_ms, fetch.ended_ms) == (
        1,
        StepStatus.COMPLETED,
        T0 + 10,
        T0 + 25,
    )
    assert untimed.history == (StepAttempt(0, T0 + 40, T0 + 40, failed=False, error=None),)
    (listed,) = store.list_runs(RunFilter(include_steps=True))
    assert listed.steps == tuple(steps.values())


def test_sleeps_and_sends_are_one_attempt_each(store: SqlStore) -> None:
    item = start(store)
    complete(store, item, "nap", Sleep(T0 + HOUR), now=T0 + 50)
    assert steps_by_id(store, item.run_id)["nap"].history == (StepAttempt(0, T0 + 50, 0, False, None),)
    item = claim(store, item.run_id, now=T0 + HOUR)  # the sleep ends with the claim
    complete(store, item, "notify", SendEvents((NewEvent("x/y", "{}"),)), now=T0 + HOUR + 5)
    steps = steps_by_id(store, item.run_id)
    assert steps["nap"].history == (StepAttempt(0, T0 + 50, T0 + HOUR, False, None),)
    assert steps["notify"].history == (StepAttempt(0, T0 + HOUR + 5, T0 + HOUR + 5, False, None),)
    assert [s.attempts for s in steps.values()] == [1, 1]


def test_a_retried_step_shows_every_attempt_and_its_neighbours_their_own(store: SqlStore) -> None:
    item = start(store)
    complete(store, item, "validate", StepOutput("true"), now=T0 + 1)
    complete(store, item, "enrich", failure("first"), now=T0 + 5, started=T0 + 2, ended=T0 + 4)
    item = claim(store, item.run_id, now=T0 + HOUR)
    complete(
        store,
        item,
        "enrich",
        failure("second"),
        now=T0 + HOUR + 5,
        started=T0 + HOUR + 2,
        ended=T0 + HOUR + 4,
    )
    item = claim(store, item.run_id, now=T0 + 2 * HOUR)
    done_at = T0 + 2 * HOUR
    complete(
        store, item, "enrich", StepOutput('"done"'), now=done_at + 5, started=done_at + 2, ended=done_at + 4
    )
    complete(store, item, "save", StepOutput("null"), now=done_at + 9)
    # Another run with a step of the same id that succeeded at once: histories are per run and step.
    other = claim(
        store, store.ingest_events([NewEvent("a/b", "{}", "e2")], now_ms=done_at).run_ids[0], now=done_at
    )
    complete(store, other, "enrich", StepOutput('"fast"'), now=done_at + 20)

    steps = steps_by_id(store, item.run_id)
    assert steps["enrich"].history == (
        StepAttempt(0, T0 + 2, T0 + 4, failed=True, error=ErrorInfo("ValueError", "first", "Traceback ...")),
        StepAttempt(
            1,
            T0 + HOUR + 2,
            T0 + HOUR + 4,
            failed=True,
            error=ErrorInfo("ValueError", "second", "Traceback ..."),
        ),
        StepAttempt(2, done_at + 2, done_at + 4, failed=False, error=None),
    )
    enrich = steps["enrich"]
    assert (enrich.attempts, enrich.status, enrich.started_ms, enrich.ended_ms) == (
        3,
        StepStatus.COMPLETED,
        T0 + 2,
        done_at + 4,
    )
    assert steps["validate"].history == (StepAttempt(0, T0 + 1, T0 + 1, False, None),)
    assert steps["save"].history == (StepAttempt(0, done_at + 9, done_at + 9, False, None),)
    listed = {run.id: run for run in store.list_runs(RunFilter(include_steps=True))}
    assert listed[item.run_id].steps == tuple(steps.values())
    (fast,) = listed[other.run_id].steps
    assert fast.history == (StepAttempt(0, done_at + 20, done_at + 20, False, None),)


def test_a_step_that_failed_every_attempt_shows_each_failure(store: SqlStore) -> None:
    item = start(store, retries=1)
    complete(store, item, "s", failure("first"), now=T0 + 5, started=T0 + 1, ended=T0 + 2)
    item = claim(store, item.run_id, now=T0 + HOUR)
    complete(store, item, "s", failure("last"), now=T0 + HOUR + 5, started=T0 + HOUR + 1, ended=T0 + HOUR + 2)
    run = store.get_run(item.run_id)
    assert run.status == RunStatus.FAILED
    (step,) = run.steps
    assert (step.status, step.attempts) == (StepStatus.FAILED, 2)
    assert [
        (a.attempt, a.started_ms, a.ended_ms, a.failed, a.error and a.error.message) for a in step.history
    ] == [
        (0, T0 + 1, T0 + 2, True, "first"),
        (1, T0 + HOUR + 1, T0 + HOUR + 2, True, "last"),
    ]
