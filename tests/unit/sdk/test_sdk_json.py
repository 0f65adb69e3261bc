"""JSON on the wire: outputs are decoded the same way on the fast path and on replay."""

from __future__ import annotations

import math

import pytest

from sdk_python import Event
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._replay import Reached, decode_result
from sdk_python._wire import (
    NotSerialisableError,
    decode_json,
    encode_json,
    event_from_pb,
    event_to_pb,
    run_from_pb,
    stamp_event,
)
from sdk_python.step import _run_step_request


def reached(step_id: str = "s") -> Reached:
    return Reached(step_id=step_id, kind="run", position=0, memo=None)


def test_step_output_is_returned_in_its_json_decoded_form() -> None:
    request = _run_step_request(reached(), 0, value={"t": (1, 2), "n": None, 3: "x"})
    assert request.HasField("step_output")
    # What a CONTINUE reply echoes back is what the step returns: tuples become lists, keys strings.
    assert decode_result("run", request.step_output.output_json) == {"t": [1, 2], "n": None, "3": "x"}


def test_a_step_returning_none_is_null() -> None:
    request = _run_step_request(reached(), 0, value=None)
    assert request.step_output.output_json == "null"
    assert decode_result("run", "null") is None


@pytest.mark.parametrize("value", [{1, 2}, object(), math.nan, {"x": float("inf")}])
def test_unserialisable_output_is_a_final_step_error_saying_so(value: object) -> None:
    request = _run_step_request(reached("load"), 0, value=value)
    assert request.HasField("step_error")
    assert request.step_error.retriable is False
    assert "not JSON-serialisable" in request.step_error.error.message
    assert "'load'" in request.step_error.error.message


def test_encode_json_names_what_failed() -> None:
    with pytest.raises(NotSerialisableError, match="the thing is not JSON-serialisable"):
        encode_json({"a": {1, 2}}, "the thing")


def test_decode_json_handles_empty_and_non_json_text() -> None:
    assert decode_json("") is None
    assert decode_json('{"a": [1, 2.5, "é"]}') == {"a": [1, 2.5, "é"]}
    assert decode_json("not json") == "not json"


def test_events_get_an_id_and_a_timestamp_once() -> None:
    stamped = stamp_event(Event(name="a/b", data={"x": 1}))
    assert stamped.id and len(stamped.id) == 32 and stamped.ts and stamped.ts > 1_600_000_000_000
    assert stamp_event(stamped) is stamped
    given = stamp_event(Event(name="a/b", id="mine", ts=5))
    assert (given.id, given.ts) == ("mine", 5)


def test_event_round_trip_through_the_wire() -> None:
    event = Event(name="api/x.y", data={"k": [1, {"z": None}]}, id="e1", ts=1234)
    assert event_from_pb(event_to_pb(event)) == event


def test_event_data_must_be_a_dict_of_json() -> None:
    with pytest.raises(TypeError, match="data must be a dict"):
        event_to_pb(Event(name="a", data=[1, 2], id="x", ts=1))  # type: ignore[arg-type]
    with pytest.raises(NotSerialisableError):
        event_to_pb(Event(name="a", data={"when": object()}, id="x", ts=1))


def test_runs_are_decoded_into_typed_records() -> None:
    run = pb.Run(
        id="r", app_id="crm", function_id="contacts-import", event_id="e", status=pb.RUN_STATUS_FAILED,
        output_json="", error=pb.Error(name="ValueError", message="bad", stack="tb"),
        created_unix_ms=1_700_000_000_000, ended_unix_ms=1_700_000_001_500,
        event=pb.Event(id="e", name="api/x", data_json='{"filename": "a.csv"}', ts_unix_ms=1_700_000_000_000),
        steps=[pb.StepInfo(id="wait", kind=pb.STEP_KIND_WAIT_FOR_EVENT, status=pb.STEP_STATUS_WAITING,
                           attempts=1, wake_unix_ms=1_700_000_100_000, wait_event="api/y",
                           wait_match="data.upload_id", position=0),
               pb.StepInfo(id="go", kind=pb.STEP_KIND_RUN, status=pb.STEP_STATUS_COMPLETED, attempts=2,
                           output_json='{"n": 3}', position=1)],
    )
    record = run_from_pb(run)
    assert record.status == "failed" and record.output is None
    assert record.error is not None and (record.error.name, record.error.message) == ("ValueError", "bad")
    assert record.created_at.tzinfo is not None and record.ended_at is not None
    assert (record.ended_at - record.created_at).total_seconds() == 1.5
    assert record.event == Event(name="api/x", data={"filename": "a.csv"}, id="e", ts=1_700_000_000_000)
    wait, go = record.steps
    assert (wait.kind, wait.status, wait.wait_match, wait.error) == ("wait_for_event", "waiting",
                                                                      "data.upload_id", None)
    assert wait.wake_at is not None and wait.started_at is None
    assert (go.kind, go.status, go.attempts, go.output) == ("run", "completed", 2, {"n": 3})
