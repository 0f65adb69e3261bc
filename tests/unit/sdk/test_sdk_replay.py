"""Step ids, memo lookups and the determinism check (pure logic, no orchestrator needed)."""

from __future__ import annotations

import asyncio

import pytest

from sdk_python import Event, NonDeterminismError
from sdk_python._execution import RunExecution, RunFailing
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._replay import MemoStep, Replay, StepIds


def memo(step_id: str, kind: str = "run", status: str = "completed", output: str = "null") -> MemoStep:
    return MemoStep(id=step_id, kind=kind, status=status, output_json=output, attempts=0)  # type: ignore[arg-type]


def test_first_occurrence_is_plain_and_repeats_are_numbered() -> None:
    ids = StepIds()
    assert [ids.next("fetch") for _ in range(4)] == ["fetch", "fetch:1", "fetch:2", "fetch:3"]
    assert ids.next("other") == "other"
    assert ids.next("fetch") == "fetch:4"


def test_counters_are_per_run() -> None:
    first, second = StepIds(), StepIds()
    first.next("a")
    assert second.next("a") == "a"


def test_new_steps_have_no_memo_and_advance_the_cursor() -> None:
    replay = Replay([])
    reached = replay.reach("a", "run")
    assert (reached.step_id, reached.position, reached.memo, reached.completed) == ("a", 0, None, False)
    assert replay.reach("a", "run").step_id == "a:1"
    assert replay.reached_count == 2


def test_completed_steps_return_their_decoded_output() -> None:
    replay = Replay([
        memo("validate", output='{"is_valid": true, "rows": [1, 2]}'),
        memo("nap", kind="sleep"),
        memo("review", kind="wait_for_event",
             output='{"id": "e1", "name": "x/reviewed", "data": {"ok": true}, "ts": 1700000000000}'),
        memo("announce", kind="send_event", output='["e2", "e3"]'),
        memo("timeout", kind="wait_for_event", output="null"),
    ])
    validate = replay.reach("validate", "run")
    assert validate.completed and validate.memoized_result() == {"is_valid": True, "rows": [1, 2]}
    assert replay.reach("nap", "sleep").memoized_result() is None
    assert replay.reach("review", "wait_for_event").memoized_result() == Event(
        name="x/reviewed", data={"ok": True}, id="e1", ts=1700000000000)
    assert replay.reach("announce", "send_event").memoized_result() == ["e2", "e3"]
    assert replay.reach("timeout", "wait_for_event").memoized_result() is None


def test_a_step_waiting_for_its_retry_is_reached_but_not_completed() -> None:
    replay = Replay([memo("a"), memo("flaky", status="running", output="")])
    replay.reach("a", "run")
    flaky = replay.reach("flaky", "run")
    assert flaky.memo is not None and not flaky.completed


def test_a_different_step_at_a_recorded_position_names_both() -> None:
    replay = Replay([memo("validate"), memo("enrich")])
    replay.reach("validate", "run")
    with pytest.raises(NonDeterminismError) as caught:
        replay.reach("notify", "run")
    assert (caught.value.expected, caught.value.found, caught.value.position) == ("enrich", "notify", 1)
    assert "'enrich'" in str(caught.value) and "'notify'" in str(caught.value)


def test_the_same_id_made_by_another_kind_of_call_is_caught() -> None:
    replay = Replay([memo("pause", kind="sleep")])
    with pytest.raises(NonDeterminismError, match="sleep"):
        replay.reach("pause", "run")


def test_a_loop_that_runs_fewer_times_is_caught_at_the_return() -> None:
    replay = Replay([memo("item"), memo("item:1"), memo("item:2")])
    replay.reach("item", "run")
    replay.reach("item", "run")
    with pytest.raises(NonDeterminismError) as caught:
        replay.check_finished()
    assert caught.value.expected == "item:2" and caught.value.found == ""


def test_reaching_every_recorded_step_passes_the_final_check() -> None:
    replay = Replay([memo("a"), memo("b")])
    replay.reach("a", "run")
    replay.reach("b", "run")
    replay.check_finished()


def test_steps_past_the_memo_are_new() -> None:
    replay = Replay([memo("a")])
    replay.reach("a", "run")
    assert replay.reach("b", "run").memo is None


def test_an_execution_fails_the_run_not_retriably_on_a_mismatch() -> None:
    item = pb.WorkItem(run_id="r1", steps=[pb.MemoStep(id="first", kind=pb.STEP_KIND_RUN,
                                                       status=pb.STEP_STATUS_COMPLETED, output_json="1")])
    loop = asyncio.new_event_loop()
    try:
        execution = RunExecution(item, stub=None, metadata=(), loop=loop, rpc_timeout=1.0)
        with pytest.raises(RunFailing) as caught:
            execution.reach("second", "run")
    finally:
        loop.close()
    failure = caught.value.failure
    assert failure.retriable is False
    assert failure.error.name == "NonDeterminismError"
    assert "'first'" in failure.error.message and "'second'" in failure.error.message
    # Even if user code swallowed the interrupt, the execution keeps failing.
    assert execution.failing == failure
    with pytest.raises(RunFailing):
        execution.reach("third", "run")
