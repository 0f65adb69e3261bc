"""The store through its interface, on a real database: events, triggers, claims, leases, completions,
retries, sleeps, cancellation and inspection. Time is driven explicitly through ``now_ms``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import errors
from orchestrator.engine.model import (
    Completion,
    Directive,
    ErrorInfo,
    FunctionSpec,
    NewEvent,
    RunCompleted,
    RunFailed,
    RunFilter,
    RunStatus,
    SendEvents,
    Sleep,
    StepError,
    StepKind,
    StepOutput,
    StepStatus,
    WorkItem,
)
from orchestrator.store import factory, leases
from orchestrator.store.sql import SqlStore

T0 = 1_800_000_000_000  # a fixed "now", Unix ms
LEASE = 30_000


def register(store: SqlStore, app: str = "crm", fn: str = "f", *triggers: str, retries: int = 4) -> None:
    store.register_functions(app, [FunctionSpec(fn, triggers or ("a/b",), retries)], now_ms=T0)


def send(store: SqlStore, name: str = "a/b", data: object = None, *, id: str | None = None, now: int = T0):
    return store.ingest_events([NewEvent(name, json.dumps(data or {}), id)], now_ms=now)


def claim(store: SqlStore, app: str = "crm", *, now: int = T0, n: int = 10, fns: tuple[str, ...] = ()):
    return store.claim_work(
        app_id=app, function_ids=fns, worker_id="w", max_items=n, now_ms=now, lease_ms=LEASE
    ).items


def claim_one(store: SqlStore, app: str = "crm", *, now: int = T0) -> WorkItem:
    items = claim(store, app, now=now)
    assert len(items) == 1, items
    return items[0]


def complete(store: SqlStore, item: WorkItem, step_id: str, outcome, *, now: int = T0):
    return store.complete_step(
        Completion(item.run_id, item.lease_id, step_id, outcome), now_ms=now, lease_ms=LEASE
    )


def boom(retriable: bool = True, retry_after_ms: int = 0) -> StepError:
    return StepError(ErrorInfo("ValueError", "boom", "Traceback ..."), retriable, retry_after_ms)


# -- events and triggers ----------------------------------------------------------------------------


def test_event_with_a_known_id_is_acknowledged_and_starts_nothing(store: SqlStore) -> None:
    register(store)
    first = send(store, id="evt-1")
    again = send(store, id="evt-1")
    assert first.ids == again.ids == ("evt-1",)
    assert len(first.run_ids) == 1
    assert again.run_ids == ()
    batch = store.ingest_events([NewEvent("a/b", "{}", "evt-2"), NewEvent("a/b", "{}", "evt-2")], now_ms=T0)
    assert batch.ids == ("evt-2", "evt-2")
    assert len(batch.run_ids) == 1
    assert len(store.list_runs(RunFilter())) == 2


def test_a_batch_inserts_only_its_new_ids_the_first_of_repeats_in_order(store: SqlStore) -> None:
    register(store)
    send(store, id="evt-1")
    batch = store.ingest_events(
        [
            NewEvent("a/b", '{"v": "known"}', "evt-1"),
            NewEvent("a/b", '{"v": "first"}', "evt-3"),
            NewEvent("a/b", '{"v": "second"}', "evt-3"),
            NewEvent("a/b", '{"v": "last"}', "evt-4"),
        ],
        now_ms=T0,
    )
    assert batch.ids == ("evt-1", "evt-3", "evt-3", "evt-4")
    runs = [store.get_run(run_id) for run_id in batch.run_ids]
    assert [(run.event.id, run.event.data_json) for run in runs] == [
        ("evt-3", '{"v": "first"}'),
        ("evt-4", '{"v": "last"}'),
    ]
    assert runs[0].event.seq < runs[1].event.seq


def test_server_assigns_ids_and_timestamps(store: SqlStore) -> None:
    register(store)
    result = send(store, now=T0 + 5)
    (event_id,) = result.ids
    assert event_id
    run = store.get_run(result.run_ids[0])
    assert run.event.id == event_id
    assert run.event.ts_ms == T0 + 5


def test_an_event_starts_every_function_triggered_by_its_name_in_every_app(store: SqlStore) -> None:
    register(store, "crm", "import", "a/b")
    register(store, "crm", "audit", "a/b", "x/y")
    register(store, "billing", "charge", "a/b")
    register(store, "billing", "other", "c/d")
    result = send(store)
    runs = {(r.app_id, r.function_id) for r in store.list_runs(RunFilter())}
    assert runs == {("crm", "import"), ("crm", "audit"), ("billing", "charge")}
    assert result.wakeups.ready_apps == {"crm", "billing"}
    assert send(store, "nobody/listens").run_ids == ()


def test_re_registering_replaces_triggers_and_retries(store: SqlStore) -> None:
    register(store, "crm", "f", "a/b", retries=1)
    register(store, "crm", "f", "x/y", retries=7)
    assert send(store, "a/b").run_ids == ()
    (run_id,) = send(store, "x/y").run_ids
    item = claim_one(store)
    for attempt in range(7):
        assert complete(store, item, "s", boom(), now=T0 + attempt).directive == Directive.STOP
        item = claim_one(store, now=T0 + 10 * 3_600_000 * (attempt + 1))
    assert store.get_run(run_id).status == RunStatus.RUNNING


def test_registrations_and_runs_persist_across_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    first = factory.open_store(url)
    register(first)
    (run_id,) = send(first).run_ids
    first.close()
    second = factory.open_store(url)
    try:
        assert len(send(second).run_ids) == 1
        assert second.get_run(run_id).status == RunStatus.RUNNING
    finally:
        second.close()


# -- claims and leases ------------------------------------------------------------------------------


def test_a_claim_of_several_runs_hands_each_its_own_event_oldest_first(store: SqlStore) -> None:
    # One statement leases the runs and reads their events (SQLite: subqueries in its RETURNING,
    # whose rows come back in no particular order): each item must carry the event that started
    # its run, every field of it, and the items come oldest first.
    register(store, "crm", "f", "a/b", "c/d")
    sent = [
        ("c/d", {"n": 3}, "e3", T0 + 2),
        ("a/b", {"n": 1}, "e1", T0),
        ("a/b", {"n": 2}, "e2", T0 + 1),
    ]
    run_of: dict[str, str] = {}
    for name, data, event_id, at in sent:
        ingested = store.ingest_events([NewEvent(name, json.dumps(data), event_id, at - 1_000)], now_ms=at)
        (run_of[event_id],) = ingested.run_ids
    items = claim(store, now=T0 + 10)
    assert [(i.event.id, i.event.name, json.loads(i.event.data_json), i.event.ts_ms) for i in items] == [
        ("e1", "a/b", {"n": 1}, T0 - 1_000),
        ("e2", "a/b", {"n": 2}, T0 + 1 - 1_000),
        ("e3", "c/d", {"n": 3}, T0 + 2 - 1_000),
    ]
    assert {i.event.id: i.run_id for i in items} == run_of
    assert items[0].event.seq < items[1].event.seq


def test_claim_leases_ready_runs_of_the_callers_functions(store: SqlStore) -> None:
    register(store, "crm", "f", "a/b")
    register(store, "crm", "g", "a/b")
    register(store, "other", "h", "a/b")
    send(store, data={"n": 1}, id="e1")
    only_g = claim(store, fns=("g",))
    assert [i.function_id for i in only_g] == ["g"]
    item = only_g[0]
    assert item.event.id == "e1" and json.loads(item.event.data_json) == {"n": 1}
    assert item.steps == () and item.attempt == 0
    assert item.lease_expires_ms == T0 + LEASE
    rest = claim(store)
    assert [i.function_id for i in rest] == ["f"]
    assert claim(store) == ()  # leased runs are not handed out twice
    assert [i.function_id for i in claim(store, "other")] == ["h"]


@pytest.mark.parametrize("named", [1, 3, leases.MAX_FUNCTION_SCANS + 1])
def test_a_claim_naming_functions_takes_the_oldest_runs_across_them(store: SqlStore, named: int) -> None:
    # SQLite reads one range per named function (up to MAX_FUNCTION_SCANS; more are filtered from
    # the app's range) and takes the oldest of them: the runs come oldest first across the named
    # functions, at most max_items, and the app's other functions' older runs are left.
    functions = [f"f{i}" for i in range(named + 1)]
    for fn in functions:
        register(store, "crm", fn, f"e/{fn}")
    register(store, "other", "f1", "e/other")
    send(store, "e/other", now=T0 - 2)
    send(store, "e/other", now=T0 - 1)
    ready_at: dict[str, tuple[int, str]] = {}
    for round_ in range(2):
        for i, fn in enumerate(functions):
            at = T0 + round_ * len(functions) + i
            for run_id in send(store, f"e/{fn}", now=at).run_ids:
                ready_at[run_id] = (at, fn)
    named_fns = tuple(reversed(functions[1:]))  # f0, the oldest, is not named
    expected = sorted((at, fn, run_id) for run_id, (at, fn) in ready_at.items() if fn in named_fns)
    taken: list[tuple[int, str, str]] = []
    while batch := claim(store, now=T0 + 1_000, n=2, fns=named_fns):
        assert len(batch) <= 2
        taken.extend((ready_at[i.run_id][0], i.function_id, i.run_id) for i in batch)
    assert taken == expected
    assert sorted(i.function_id for i in claim(store, now=T0 + 1_000)) == ["f0", "f0"]
    assert [i.function_id for i in claim(store, "other", now=T0 + 1_000)] == ["f1", "f1"]


def test_claim_takes_at_most_max_items(store: SqlStore) -> None:
    register(store)
    for i in range(5):
        send(store, id=f"e{i}")
    assert len(claim(store, n=2)) == 2
    assert len(claim(store, n=10)) == 3


def test_expired_lease_hands_the_run_out_again_and_the_old_lease_is_stale(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    old = claim_one(store)
    assert store.fire_due_timers(now_ms=T0 + LEASE - 1, since_ms=T0).expired_leases == 0
    fired = store.fire_due_timers(now_ms=T0 + LEASE, since_ms=T0)
    assert fired.expired_leases == 1 and fired.wakeups.ready_apps == {"crm"}
    new = claim_one(store, now=T0 + LEASE)
    assert new.lease_id != old.lease_id
    with pytest.raises(errors.StaleLease, match="handed to another worker"):
        complete(store, old, "s1", StepOutput('"late"'), now=T0 + LEASE + 1)
    with pytest.raises(errors.StaleLease):
        store.extend_lease(run_id, old.lease_id, now_ms=T0 + LEASE + 1, lease_ms=LEASE)
    assert store.get_run(run_id).steps == ()  # nothing changed
    assert complete(store, new, "s1", StepOutput('"fresh"')).output_json == '"fresh"'


def test_extend_lease_postpones_expiry(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    expires = store.extend_lease(run_id, item.lease_id, now_ms=T0 + 20_000, lease_ms=LEASE)
    assert expires == T0 + 20_000 + LEASE
    assert store.fire_due_timers(now_ms=T0 + LEASE, since_ms=T0).expired_leases == 0
    assert store.next_deadline_ms(now_ms=T0 + LEASE) == expires
    assert store.fire_due_timers(now_ms=expires, since_ms=T0).expired_leases == 1


def test_release_makes_the_run_ready_at_once(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    assert store.release_work(run_id, item.lease_id, now_ms=T0 + 1).ready_apps == {"crm"}
    again = claim_one(store, now=T0 + 1)
    assert again.attempt == 0  # the released attempt is not counted
    with pytest.raises(errors.StaleLease):
        store.release_work(run_id, item.lease_id, now_ms=T0 + 2)


def test_unknown_run(store: SqlStore) -> None:
    with pytest.raises(errors.NotFound, match="run nope not found"):
        store.get_run("nope")
    with pytest.raises(errors.NotFound):
        store.complete_step(Completion("nope", "lease", "s", StepOutput("1")), now_ms=T0, lease_ms=LEASE)
    with pytest.raises(errors.NotFound):
        store.cancel_run("nope", now_ms=T0)


# -- completions ------------------------------------------------------------------------------------


def test_steps_are_recorded_in_order_and_memoized_for_the_next_claim(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    first = complete(store, item, "validate", StepOutput('{"is_valid": true, "n": 1.5}'), now=T0 + 10)
    assert first.directive == Directive.CONTINUE
    assert json.loads(first.output_json) == {"is_valid": True, "n": 1.5}
    assert first.lease_expires_ms == T0 + 10 + LEASE
    complete(store, item, "enrich", StepOutput("[1, 2]"), now=T0 + 20)
    store.release_work(run_id, item.lease_id, now_ms=T0 + 30)
    again = claim_one(store, now=T0 + 30)
    assert [(s.id, s.position, s.status, s.output_json) for s in again.steps] == [
        ("validate", 0, StepStatus.COMPLETED, first.output_json),
        ("enrich", 1, StepStatus.COMPLETED, "[1, 2]"),
    ]
    done = complete(store, again, "", RunCompleted('{"imported": 3}'), now=T0 + 40)
    assert done.directive == Directive.STOP
    run = store.get_run(run_id)
    assert run.status == RunStatus.COMPLETED
    assert json.loads(run.output_json) == {"imported": 3}
    assert run.ended_ms == T0 + 40
    assert [(s.id, s.attempts) for s in run.steps] == [("validate", 1), ("enrich", 1)]


def test_a_memo_hands_back_every_recorded_output_as_stored(store: SqlStore) -> None:
    # Quotes, backslashes, non-ASCII, a line separator and a NUL in outputs; a null output; an
    # elapsed sleep the claim ends: the memo says what GetRun says, field by field.
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    tricky = json.dumps({"q": "\"'\\", "u": "é☃\u2028", "nul": "\u0000"}, ensure_ascii=False)
    complete(store, item, "tricky", StepOutput(tricky))
    complete(store, item, "none", StepOutput("null"))
    assert complete(store, item, "nap", Sleep(T0 + 10)).directive == Directive.STOP
    again = claim_one(store, now=T0 + 20)
    recorded = store.get_run(run_id).steps
    assert [(s.id, s.kind, s.status, s.output_json, s.attempts, s.position) for s in again.steps] == [
        (s.id, s.kind, s.status, s.output_json, s.attempts - 1, s.position) for s in recorded
    ]
    assert [(s.id, s.status) for s in again.steps][-1] == ("nap", StepStatus.COMPLETED)
    assert json.loads(again.steps[0].output_json) == json.loads(tricky)


def test_a_repeated_completion_gets_the_same_answer_and_is_recorded_once(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    first = complete(store, item, "s1", StepOutput('{"v": 1}'))
    second = complete(store, item, "s1", StepOutput('{"v": 2}'))  # a re-run after a lost reply
    assert second.directive == first.directive == Directive.CONTINUE
    assert second.output_json == first.output_json
    stop = complete(store, item, "s2", boom())
    assert stop.directive == Directive.STOP
    assert complete(store, item, "s2", boom()).directive == Directive.STOP
    run = store.get_run(run_id)
    assert [(s.id, s.attempts, len(s.history)) for s in run.steps] == [("s1", 1, 1), ("s2", 1, 1)]
    assert json.loads(run.steps[0].output_json) == {"v": 1}


def test_a_repeated_run_completion_gets_stop_again(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    assert complete(store, item, "", RunCompleted("1")).directive == Directive.STOP
    assert complete(store, item, "", RunCompleted("1")).directive == Directive.STOP
    assert store.get_run(run_id).output_json == "1"


def test_a_step_id_recorded_as_another_kind_is_a_conflict(store: SqlStore) -> None:
    register(store)
    send(store)
    item = claim_one(store)
    complete(store, item, "s", StepOutput("1"))
    with pytest.raises(errors.StepConflict, match="recorded as a run step, not a sleep step"):
        complete(store, item, "s", Sleep(T0 - 1))


def test_steps_per_run_are_limited(store: SqlStore) -> None:
    register(store)
    send(store)
    item = claim_one(store)

    def step(step_id: str) -> object:
        # The limit travels with each completion (Settings.max_steps_per_run through validation).
        completion = Completion(item.run_id, item.lease_id, step_id, StepOutput("1"), max_steps=2)
        return store.complete_step(completion, now_ms=T0, lease_ms=LEASE)

    step("a")
    step("b")
    with pytest.raises(errors.LimitExceeded, match=r"has 2 steps, the limit \(max_steps_per_run\) is 2"):
        step("c")


# -- retries ----------------------------------------------------------------------------------------


def test_a_failed_step_is_retried_alone_after_backoff(store: SqlStore) -> None:
    register(store, retries=4)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    complete(store, item, "validate", StepOutput("true"))
    result = complete(store, item, "enrich", boom(), now=T0 + 100)
    assert result.directive == Directive.STOP
    # Backoff after the first failure: 1 s +/- 20%.
    assert result.wakeups.deadline_ms is not None
    delay = result.wakeups.deadline_ms - (T0 + 100)
    assert 800 <= delay <= 1200
    assert claim(store, now=T0 + 100 + delay - 1) == ()
    assert store.next_deadline_ms(now_ms=T0 + 100) == T0 + 100 + delay
    fired = store.fire_due_timers(now_ms=T0 + 100 + delay, since_ms=T0 + 100)
    assert fired.wakeups.ready_apps == {"crm"}
    retry = claim_one(store, now=T0 + 100 + delay)
    assert retry.attempt == 1
    assert [(s.id, s.status, s.attempts) for s in retry.steps] == [
        ("validate", StepStatus.COMPLETED, 0),
        ("enrich", StepStatus.RUNNING, 1),
    ]
    ok = complete(store, retry, "enrich", StepOutput('"enriched"'), now=T0 + 5_000)
    assert ok.directive == Directive.CONTINUE
    run = store.get_run(run_id)
    enrich = run.steps[1]
    assert enrich.status == StepStatus.COMPLETED and enrich.attempts == 2
    assert [(a.attempt, a.failed) for a in enrich.history] == [(0, True), (1, False)]
    assert enrich.history[0].error == ErrorInfo("ValueError", "boom", "Traceback ...")
    assert run.steps[0].attempts == 1  # the step before ran once


def test_retries_exhausted_fail_the_run_with_the_step_error(store: SqlStore) -> None:
    register(store, retries=1)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    assert complete(store, item, "s", boom()).directive == Directive.STOP
    item = claim_one(store, now=T0 + 3_600_000)
    assert item.attempt == 1
    assert complete(store, item, "s", boom(), now=T0 + 3_600_000).directive == Directive.STOP
    run = store.get_run(run_id)
    assert run.status == RunStatus.FAILED
    assert run.error == ErrorInfo("ValueError", "boom", "Traceback ...")
    assert run.steps[0].status == StepStatus.FAILED and run.steps[0].attempts == 2
    assert claim(store, now=T0 + 10 * 3_600_000) == ()
    with pytest.raises(errors.RunEnded, match="already ended"):
        store.cancel_run(run_id, now_ms=T0)


def test_a_non_retriable_error_fails_the_run_at_once(store: SqlStore) -> None:
    register(store, retries=4)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    complete(store, item, "s", boom(retriable=False))
    run = store.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.steps[0].attempts == 1


def test_retry_after_sets_the_delay(store: SqlStore) -> None:
    register(store)
    send(store)
    item = claim_one(store)
    result = complete(store, item, "s", boom(retry_after_ms=7_000))
    assert result.wakeups.deadline_ms == T0 + 7_000
    assert claim(store, now=T0 + 6_999) == ()
    assert claim_one(store, now=T0 + 7_000).attempt == 1


def test_a_failure_outside_steps_retries_the_body(store: SqlStore) -> None:
    register(store, retries=1)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    complete(store, item, "s", StepOutput("1"))
    fail = RunFailed(ErrorInfo("KeyError", "'x'", ""), retriable=True)
    assert complete(store, item, "", fail).directive == Directive.STOP
    again = claim_one(store, now=T0 + 3_600_000)
    assert again.attempt == 1 and again.steps[0].status == StepStatus.COMPLETED
    complete(store, again, "", fail, now=T0 + 3_600_000)
    run = store.get_run(run_id)
    assert run.status == RunStatus.FAILED and run.error is not None and run.error.name == "KeyError"


# -- sleeps -----------------------------------------------------------------------------------------


def test_sleep_parks_the_run_until_its_deadline(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    result = complete(store, item, "nap", Sleep(T0 + 60_000))
    assert result.directive == Directive.STOP
    assert result.wakeups.deadline_ms == T0 + 60_000
    assert store.get_run(run_id).steps[0].status == StepStatus.SLEEPING
    assert store.get_run(run_id).status == RunStatus.RUNNING
    assert claim(store, now=T0 + 59_999) == ()
    assert store.next_deadline_ms(now_ms=T0) == T0 + 60_000
    woke = claim_one(store, now=T0 + 60_000)
    assert [(s.id, s.kind, s.status, s.output_json) for s in woke.steps] == [
        ("nap", StepKind.SLEEP, StepStatus.COMPLETED, "null")
    ]
    step = store.get_run(run_id).steps[0]
    assert step.wake_ms == T0 + 60_000 and step.ended_ms == T0 + 60_000


def test_a_sleep_already_over_continues_at_once(store: SqlStore) -> None:
    register(store)
    send(store)
    item = claim_one(store)
    result = complete(store, item, "nap", Sleep(T0 - 1))
    assert (result.directive, result.output_json) == (Directive.CONTINUE, "null")


# -- send_event -------------------------------------------------------------------------------------


def test_send_events_ingests_once_and_triggers_functions(store: SqlStore) -> None:
    register(store, "crm", "f", "a/b")
    register(store, "mail", "notify", "mail/send")
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    step = SendEvents((NewEvent("mail/send", '{"to": "x"}', "m-1"), NewEvent("mail/send", "{}")))
    first = complete(store, item, "notify", step)
    assert first.directive == Directive.CONTINUE
    ids = json.loads(first.output_json)
    assert ids[0] == "m-1" and len(ids) == 2
    assert first.wakeups.ready_apps == {"mail"}
    again = complete(store, item, "notify", step)
    assert again.output_json == first.output_json
    assert len(store.list_runs(RunFilter(function_id="notify"))) == 2
    assert store.get_run(run_id).steps[0].kind == StepKind.SEND_EVENT


# -- cancellation and listing -----------------------------------------------------------------------


def test_cancel_ends_the_run_and_its_lease(store: SqlStore) -> None:
    register(store)
    (run_id,) = send(store).run_ids
    item = claim_one(store)
    view = store.cancel_run(run_id, now_ms=T0 + 5)
    assert view.status == RunStatus.CANCELLED and view.ended_ms == T0 + 5
    with pytest.raises(errors.RunEnded, match="was cancelled"):
        complete(store, item, "s", StepOutput("1"))
    with pytest.raises(errors.RunEnded, match="already cancelled"):
        store.cancel_run(run_id, now_ms=T0 + 6)
    assert claim(store, now=T0 + 10 * LEASE) == ()
    assert store.fire_due_timers(now_ms=T0 + 10 * LEASE, since_ms=0).expired_leases == 0


def test_list_runs_newest_first_with_filters(store: SqlStore) -> None:
    register(store, "crm", "f", "a/b")
    register(store, "crm", "g", "c/d")
    register(store, "ops", "h", "a/b")
    first = send(store, id="e1", now=T0)
    second = send(store, "c/d", id="e2", now=T0 + 1)
    third = send(store, id="e3", now=T0 + 2)
    all_runs = store.list_runs(RunFilter())
    assert [r.event_id for r in all_runs] == ["e3", "e3", "e2", "e1", "e1"]
    assert all(r.steps == () for r in all_runs)
    assert [r.function_id for r in store.list_runs(RunFilter(function_id="g"))] == ["g"]
    assert {r.id for r in store.list_runs(RunFilter(event_id="e1"))} == set(first.run_ids)
    assert {r.app_id for r in store.list_runs(RunFilter(app_id="ops"))} == {"ops"}
    assert len(store.list_runs(RunFilter(limit=2))) == 2
    (g_run,) = second.run_ids
    (item,) = claim(store, fns=("g",), now=T0 + 5)
    complete(store, item, "s", StepOutput("1"))
    complete(store, item, "", RunCompleted("null"))
    store.cancel_run(third.run_ids[0], now_ms=T0 + 3)
    completed = store.list_runs(RunFilter(status=RunStatus.COMPLETED, include_steps=True))
    assert [r.id for r in completed] == [g_run]
    assert [s.id for s in completed[0].steps] == ["s"]
    assert [r.id for r in store.list_runs(RunFilter(status=RunStatus.CANCELLED))] == [third.run_ids[0]]
    assert len(store.list_runs(RunFilter(status=RunStatus.RUNNING))) == 3
