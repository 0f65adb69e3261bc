"""wait_for_event through the store on a real database: matching, the no-gap rule, timeouts, and the
race between a timeout and a matching event."""

from __future__ import annotations

import json
import threading

import pytest

from orchestrator.engine.model import (
    Completion,
    CompletionResult,
    Directive,
    FunctionSpec,
    NewEvent,
    RunStatus,
    Sleep,
    StepOutput,
    StepStatus,
    WaitForEvent,
    WorkItem,
)
from orchestrator.store import txn
from orchestrator.store.sql import SqlStore

T0 = 1_800_000_000_000
LEASE = 30_000
DAY = 86_400_000
UPLOADED, REVIEWED = "api/contact_list.uploaded", "api/contact_list.reviewed"


def start(store: SqlStore, upload_id: object = "u1", *, now: int = T0) -> WorkItem:
    """Registers the import function, uploads, and claims the new run."""
    store.register_functions("crm", [FunctionSpec("import", (UPLOADED,))], now_ms=now)
    (run_id,) = store.ingest_events(
        [NewEvent(UPLOADED, json.dumps({"upload_id": upload_id}))], now_ms=now
    ).run_ids
    items = store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=1, now_ms=now, lease_ms=LEASE
    ).items
    assert [i.run_id for i in items] == [run_id]
    return items[0]


def review(store: SqlStore, upload_id: object, *, id: str | None = None, now: int = T0, **data: object):
    payload = {"upload_id": upload_id, **data}
    return store.ingest_events([NewEvent(REVIEWED, json.dumps(payload), id)], now_ms=now)


def wait(
    store: SqlStore, item: WorkItem, *, match: str = "data.upload_id", timeout: int = T0 + DAY, now: int = T0
) -> CompletionResult:
    return store.complete_step(
        Completion(item.run_id, item.lease_id, "wait-review", WaitForEvent(REVIEWED, match, timeout)),
        now_ms=now,
        lease_ms=LEASE,
    )


def step_output(store: SqlStore, item: WorkItem, step_id: str, *, now: int = T0) -> None:
    store.complete_step(
        Completion(item.run_id, item.lease_id, step_id, StepOutput("1")), now_ms=now, lease_ms=LEASE
    )


def wait_step(store: SqlStore, run_id: str):
    (step,) = [s for s in store.get_run(run_id).steps if s.id == "wait-review"]
    return step


def test_a_matching_event_resumes_the_wait_and_another_upload_does_not(store: SqlStore) -> None:
    item = start(store, "u1")
    parked = wait(store, item)
    assert parked.directive == Directive.STOP
    assert parked.wakeups.deadline_ms == T0 + DAY
    assert wait_step(store, item.run_id).status == StepStatus.WAITING
    other = review(store, "u2", is_approved=True, now=T0 + 10)
    assert other.wakeups.ready_apps == frozenset()
    assert wait_step(store, item.run_id).status == StepStatus.WAITING
    hit = review(store, "u1", id="rev-1", is_approved=True, now=T0 + 20)
    assert hit.wakeups.ready_apps == {"crm"}
    step = wait_step(store, item.run_id)
    assert step.status == StepStatus.COMPLETED
    assert step.resumed_by_event_id == "rev-1"
    assert (step.wait_event, step.wait_match, step.wake_ms) == (REVIEWED, "data.upload_id", T0 + DAY)
    event = json.loads(step.output_json)
    assert event == {
        "id": "rev-1",
        "name": REVIEWED,
        "data": {"upload_id": "u1", "is_approved": True},
        "ts": T0 + 20,
    }
    resumed = store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=1, now_ms=T0 + 20, lease_ms=LEASE
    ).items
    assert [(s.id, s.status, s.output_json) for s in resumed[0].steps] == [
        ("wait-review", StepStatus.COMPLETED, step.output_json)
    ]


def test_match_values_compare_as_json_values(store: SqlStore) -> None:
    item = start(store, {"b": 1, "a": [1, 2]})
    wait(store, item)
    review(store, {"a": [1, 2.0], "b": 1.0})
    assert wait_step(store, item.run_id).status == StepStatus.COMPLETED


def test_a_wait_without_match_takes_any_event_of_the_name(store: SqlStore) -> None:
    item = start(store, "u1")
    wait(store, item, match="")
    review(store, "zzz")
    assert wait_step(store, item.run_id).status == StepStatus.COMPLETED


def test_a_trigger_without_the_matched_value_matches_nothing(store: SqlStore) -> None:
    item = start(store, "u1")
    wait(store, item, match="data.missing")
    review(store, "u1")
    assert wait_step(store, item.run_id).status == StepStatus.WAITING


def test_no_gap_an_event_between_the_last_commit_and_the_wait_is_seen(store: SqlStore) -> None:
    item = start(store, "u1")
    step_output(store, item, "enrich", now=T0 + 1)
    # The review lands while the worker is between the "enrich" commit and registering the wait.
    review(store, "u1", id="early", now=T0 + 2)
    result = wait(store, item, now=T0 + 3)
    assert result.directive == Directive.CONTINUE
    assert json.loads(result.output_json)["id"] == "early"
    step = wait_step(store, item.run_id)
    assert step.status == StepStatus.COMPLETED and step.resumed_by_event_id == "early"


def test_events_before_the_previous_step_was_committed_do_not_count(store: SqlStore) -> None:
    item = start(store, "u1")
    review(store, "u1", id="too-early", now=T0 + 1)
    step_output(store, item, "enrich", now=T0 + 2)
    assert wait(store, item, now=T0 + 3).directive == Directive.STOP
    review(store, "u1", id="in-time", now=T0 + 4)
    assert wait_step(store, item.run_id).resumed_by_event_id == "in-time"


def test_events_after_the_trigger_count_for_a_first_wait(store: SqlStore) -> None:
    item = start(store, "u1")
    review(store, "u1", id="right-after", now=T0 + 1)
    assert wait(store, item, now=T0 + 2).directive == Directive.CONTINUE


def test_events_received_during_a_sleep_do_not_count_for_a_wait_after_it(store: SqlStore) -> None:
    item = start(store, "u1")
    nap = Completion(item.run_id, item.lease_id, "nap", Sleep(T0 + 1_000))
    assert store.complete_step(nap, now_ms=T0 + 1, lease_ms=LEASE).directive == Directive.STOP
    review(store, "u1", id="while-asleep", now=T0 + 2)
    # The claim that hands the run out after its wake time ends the sleep: the run's newest step.
    (woke,) = store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=1, now_ms=T0 + 1_000, lease_ms=LEASE
    ).items
    assert [(s.id, s.status) for s in woke.steps] == [("nap", StepStatus.COMPLETED)]
    assert wait(store, woke, now=T0 + 1_001).directive == Directive.STOP
    review(store, "u1", id="after-the-nap", now=T0 + 1_002)
    assert wait_step(store, item.run_id).resumed_by_event_id == "after-the-nap"


def test_the_timeout_resumes_with_null(store: SqlStore) -> None:
    item = start(store, "u1")
    wait(store, item, timeout=T0 + 1_000)
    assert store.next_deadline_ms(now_ms=T0) == T0 + 1_000
    assert store.fire_due_timers(now_ms=T0 + 999, since_ms=T0).timed_out_waits == 0
    fired = store.fire_due_timers(now_ms=T0 + 1_000, since_ms=T0 + 999)
    assert fired.timed_out_waits == 1 and fired.wakeups.ready_apps == {"crm"}
    step = wait_step(store, item.run_id)
    assert (step.status, step.output_json, step.resumed_by_event_id) == (StepStatus.COMPLETED, "null", "")
    review(store, "u1", now=T0 + 2_000)  # too late: changes nothing
    assert wait_step(store, item.run_id).output_json == "null"


def test_an_event_before_the_timer_fires_wins_over_the_due_timeout(store: SqlStore) -> None:
    item = start(store, "u1")
    wait(store, item, timeout=T0 + 1_000)
    review(store, "u1", id="photo-finish", now=T0 + 1_500)  # past the timeout, timer not fired yet
    assert store.fire_due_timers(now_ms=T0 + 1_500, since_ms=T0).timed_out_waits == 0
    assert wait_step(store, item.run_id).resumed_by_event_id == "photo-finish"


def test_timeout_and_event_racing_exactly_one_wins(store: SqlStore) -> None:
    """Many runs wait; the timer pass and the matching events run concurrently in threads."""
    items = [start(store, f"u{i}") for i in range(20)]
    for item in items:
        wait(store, item, timeout=T0 + 1_000)
    barrier = threading.Barrier(2)
    results: dict[str, int] = {}

    def fire() -> None:
        barrier.wait()
        results["timeouts"] = store.fire_due_timers(now_ms=T0 + 1_000, since_ms=T0).timed_out_waits

    def send() -> None:
        barrier.wait()
        for i in range(20):
            review(store, f"u{i}", id=f"rev-{i}", now=T0 + 1_000)

    threads = [threading.Thread(target=fire), threading.Thread(target=send)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    matched = 0
    for item in items:
        step = wait_step(store, item.run_id)
        assert step.status == StepStatus.COMPLETED
        if step.resumed_by_event_id:
            matched += 1
            assert json.loads(step.output_json)["id"] == step.resumed_by_event_id
        else:
            assert step.output_json == "null"
    assert matched + results["timeouts"] == 20


def test_one_event_resumes_every_run_waiting_for_it(store: SqlStore) -> None:
    first = start(store, "same")
    second = start(store, "same")
    wait(store, first)
    wait(store, second)
    assert review(store, "same").wakeups.ready_apps == {"crm"}
    assert wait_step(store, first.run_id).status == StepStatus.COMPLETED
    assert wait_step(store, second.run_id).status == StepStatus.COMPLETED


def test_two_events_of_a_batch_matching_one_wait_resume_it_with_the_first(store: SqlStore) -> None:
    item = start(store, "u1")
    wait(store, item)
    events = [
        NewEvent(REVIEWED, json.dumps({"upload_id": "u1", "n": n}), f"rev-{n}") for n in (1, 2)
    ]
    store.ingest_events(events, now_ms=T0 + 1)
    step = wait_step(store, item.run_id)
    assert (step.status, step.resumed_by_event_id) == (StepStatus.COMPLETED, "rev-1")
    assert json.loads(step.output_json)["data"] == {"upload_id": "u1", "n": 1}


def test_waits_whose_values_share_a_hash_are_told_apart_by_value(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(txn, "hash_value", lambda value: None if value is None else "same")
    first, second = start(store, "u1"), start(store, "u2")
    wait(store, first)
    wait(store, second)
    review(store, "u2", now=T0 + 1)
    assert wait_step(store, first.run_id).status == StepStatus.WAITING
    assert wait_step(store, second.run_id).status == StepStatus.COMPLETED


def test_a_second_wait_does_not_reuse_the_event_that_resumed_the_first(store: SqlStore) -> None:
    item = start(store, "u1")
    wait(store, item)
    review(store, "u1", id="first", now=T0 + 1)
    again = store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=1, now_ms=T0 + 2, lease_ms=LEASE
    ).items[0]
    second = store.complete_step(
        Completion(
            again.run_id, again.lease_id, "wait-2", WaitForEvent(REVIEWED, "data.upload_id", T0 + DAY)
        ),
        now_ms=T0 + 3,
        lease_ms=LEASE,
    )
    assert second.directive == Directive.STOP
    review(store, "u1", id="second", now=T0 + 4)
    steps = {s.id: s for s in store.get_run(item.run_id).steps}
    assert steps["wait-2"].resumed_by_event_id == "second"


def test_cancelling_a_waiting_run_closes_its_wait(store: SqlStore) -> None:
    item = start(store, "u1")
    wait(store, item)
    assert store.cancel_run(item.run_id, now_ms=T0 + 1).status == RunStatus.CANCELLED
    assert review(store, "u1").wakeups.ready_apps == frozenset()
    assert store.fire_due_timers(now_ms=T0 + 2 * DAY, since_ms=T0).timed_out_waits == 0
    assert store.next_deadline_ms(now_ms=T0) is None
    assert store.get_run(item.run_id).status == RunStatus.CANCELLED


def test_wait_registration_racing_the_matching_event_never_misses_it(store: SqlStore) -> None:
    """Each run registers its wait while its matching event is ingested concurrently: whichever
    commits first, the wait ends completed with that event (found in the backlog, or resumed)."""
    items = [start(store, f"r{i}") for i in range(20)]
    for item in items:
        step_output(store, item, "enrich")
    barrier = threading.Barrier(2)

    def register_waits() -> None:
        barrier.wait()
        for item in items:
            wait(store, item, now=T0 + 1)

    def send_reviews() -> None:
        barrier.wait()
        for i in range(20):
            review(store, f"r{i}", id=f"rev-{i}", now=T0 + 1)

    threads = [threading.Thread(target=register_waits), threading.Thread(target=send_reviews)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for i, item in enumerate(items):
        step = wait_step(store, item.run_id)
        assert (step.status, step.resumed_by_event_id) == (StepStatus.COMPLETED, f"rev-{i}")
