"""Scenario 12: every RPC answers bad input with INVALID_ARGUMENT and a message naming the field; an
unknown run is NOT_FOUND; a stale lease is FAILED_PRECONDITION. Raw stubs: no SDK validation in between.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import pytest

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support import OrchestratorProcess

APP = "raw-app"
FUNCTION = "probe"
TRIGGER = "raw/probe"
TIMEOUT = 15.0


@dataclass(frozen=True)
class Leased:
    """A run of the probe function leased to this test."""

    run_id: str
    lease_id: str


@pytest.fixture
def stub(orchestrator: OrchestratorProcess) -> Iterator[pb_grpc.OrchestratorStub]:
    with grpc.insecure_channel(orchestrator.target) as channel:
        yield pb_grpc.OrchestratorStub(channel)


def _register(stub: pb_grpc.OrchestratorStub) -> None:
    stub.RegisterFunctions(
        pb.RegisterFunctionsRequest(
            app_id=APP,
            functions=[pb.FunctionConfig(function_id=FUNCTION, triggers=[pb.Trigger(event=TRIGGER)])],
        ),
        timeout=TIMEOUT,
    )


def _lease_new_run(stub: pb_grpc.OrchestratorStub, event_id: str) -> Leased:
    _register(stub)
    sent = stub.SendEvent(
        pb.SendEventRequest(events=[pb.Event(id=event_id, name=TRIGGER, data_json='{"n": 1}')]),
        timeout=TIMEOUT,
    )
    assert len(sent.run_ids) == 1, sent
    return _poll(stub, sent.run_ids[0])


def _poll(stub: pb_grpc.OrchestratorStub, run_id: str) -> Leased:
    response = stub.PollWork(
        pb.PollWorkRequest(app_id=APP, worker_id="raw-test", max_items=1, max_wait_ms=10_000), timeout=TIMEOUT
    )
    assert [item.run_id for item in response.items] == [run_id], response
    item = response.items[0]
    assert item.lease_id and item.function_id == FUNCTION and item.event.name == TRIGGER
    return Leased(run_id=item.run_id, lease_id=item.lease_id)


def _error(call: Callable[[], object]) -> grpc.RpcError:
    try:
        result = call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected an error, got {result!r}")


def _names(details: str, field: str) -> bool:
    """True when `details` names `field` as a whole path ("events[0].name", not a prefix of it)."""
    return re.search(rf"(?<![\w.\[\]]){re.escape(field)}(?![\w.\[])", details) is not None


def test_every_rpc_rejects_bad_input_naming_the_field(stub: pb_grpc.OrchestratorStub) -> None:
    leased = _lease_new_run(stub, "probe-bad-input")
    run_id, lease_id = leased.run_id, leased.lease_id
    ok_event = pb.Event(name=TRIGGER, data_json="{}")
    trigger = [pb.Trigger(event=TRIGGER)]

    def send(*events: pb.Event) -> Callable[[], object]:
        return lambda: stub.SendEvent(pb.SendEventRequest(events=list(events)), timeout=TIMEOUT)

    def register(app_id: str = APP, **function: object) -> Callable[[], object]:
        config = pb.FunctionConfig(**{"function_id": FUNCTION, "triggers": trigger, **function})
        request = pb.RegisterFunctionsRequest(app_id=app_id, functions=[config])
        return lambda: stub.RegisterFunctions(request, timeout=TIMEOUT)

    def poll(**fields: object) -> Callable[[], object]:
        request = pb.PollWorkRequest(**{"app_id": APP, "worker_id": "w", "max_wait_ms": 100, **fields})
        return lambda: stub.PollWork(request, timeout=TIMEOUT)

    def complete(**fields: object) -> Callable[[], object]:
        request = pb.CompleteStepRequest(**{"run_id": run_id, "lease_id": lease_id, **fields})
        return lambda: stub.CompleteStep(request, timeout=TIMEOUT)

    cases: list[tuple[str, Callable[[], object], str]] = [
        ("SendEvent no events", send(), "events"),
        ("SendEvent empty name", send(pb.Event(name="")), "events[0].name"),
        ("SendEvent bad name", send(pb.Event(name="no spaces allowed")), "events[0].name"),
        ("SendEvent long name", send(pb.Event(name="a" * 257)), "events[0].name"),
        ("SendEvent bad name, 2nd", send(ok_event, pb.Event(name="bad!")), "events[1].name"),
        ("SendEvent data not JSON", send(pb.Event(name=TRIGGER, data_json="{nope")), "events[0].data_json"),
        ("SendEvent data not object", send(pb.Event(name=TRIGGER, data_json="[1]")), "events[0].data_json"),
        ("SendEvent long id", send(pb.Event(id="i" * 129, name=TRIGGER)), "events[0].id"),
        ("RegisterFunctions no app", register(app_id=""), "app_id"),
        ("RegisterFunctions bad app", register(app_id="bad app"), "app_id"),
        ("RegisterFunctions no function id", register(function_id=""), "functions[0].function_id"),
        ("RegisterFunctions no trigger", register(triggers=[]), "functions[0].triggers"),
        (
            "RegisterFunctions bad trigger",
            register(triggers=[pb.Trigger(event="bad event")]),
            "functions[0].triggers[0].event",
        ),
        ("RegisterFunctions retries > 100", register(retries=101), "functions[0].retries"),
        ("RegisterFunctions retries < 0", register(retries=-1), "functions[0].retries"),
        ("PollWork no app", poll(app_id=""), "app_id"),
        ("PollWork no worker", poll(worker_id=""), "worker_id"),
        ("PollWork max_items > 100", poll(max_items=101), "max_items"),
        ("PollWork max_items < 0", poll(max_items=-1), "max_items"),
        ("PollWork max_wait_ms > 60000", poll(max_wait_ms=60_001), "max_wait_ms"),
        ("PollWork max_wait_ms < 0", poll(max_wait_ms=-1), "max_wait_ms"),
        (
            "CompleteStep no run",
            complete(run_id="", run_completed=pb.RunCompleted(output_json="1")),
            "run_id",
        ),
        (
            "CompleteStep no lease",
            complete(lease_id="", run_completed=pb.RunCompleted(output_json="1")),
            "lease_id",
        ),
        ("CompleteStep no outcome", complete(step_id="s"), "outcome"),
        ("CompleteStep no step id", complete(step_output=pb.StepOutput(output_json="1")), "step_id"),
        (
            "CompleteStep output not JSON",
            complete(step_id="s", step_output=pb.StepOutput(output_json="{nope")),
            "step_output.output_json",
        ),
        (
            "CompleteStep run output not JSON",
            complete(run_completed=pb.RunCompleted(output_json="{nope")),
            "run_completed.output_json",
        ),
        (
            "CompleteStep wait without event",
            complete(step_id="w", wait_for_event=pb.WaitForEventRequest(event="", timeout_unix_ms=1)),
            "wait_for_event.event",
        ),
        (
            "CompleteStep send bad event",
            complete(step_id="e", send_events=pb.SendEventsRequest(events=[pb.Event(name="bad!")])),
            "send_events.events[0].name",
        ),
        ("ExtendLease no run", lambda: stub.ExtendLease(pb.ExtendLeaseRequest(lease_id=lease_id)), "run_id"),
        ("ExtendLease no lease", lambda: stub.ExtendLease(pb.ExtendLeaseRequest(run_id=run_id)), "lease_id"),
        ("ReleaseWork no run", lambda: stub.ReleaseWork(pb.ReleaseWorkRequest(lease_id=lease_id)), "run_id"),
        ("ReleaseWork no lease", lambda: stub.ReleaseWork(pb.ReleaseWorkRequest(run_id=run_id)), "lease_id"),
        ("GetRun no run", lambda: stub.GetRun(pb.GetRunRequest(run_id="")), "run_id"),
        ("ListRuns limit > 1000", lambda: stub.ListRuns(pb.ListRunsRequest(limit=1001)), "limit"),
        ("ListRuns limit < 0", lambda: stub.ListRuns(pb.ListRunsRequest(limit=-1)), "limit"),
        ("ListRuns unknown status", lambda: stub.ListRuns(pb.ListRunsRequest(status=99)), "status"),  # type: ignore[arg-type]
        ("CancelRun no run", lambda: stub.CancelRun(pb.CancelRunRequest(run_id="")), "run_id"),
    ]
    problems = []
    for label, call, field in cases:
        try:
            error = _error(call)
        except AssertionError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT or not _names(error.details() or "", field):
            problems.append(
                f"{label}: got {error.code().name} {error.details()!r}, expected a message naming {field}"
            )
    assert not problems, "\n".join(problems)

    # None of that touched the leased run: it is still running with no step, and the lease still holds.
    run = stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=TIMEOUT).run
    assert run.status == pb.RUN_STATUS_RUNNING and list(run.steps) == []
    stub.ExtendLease(pb.ExtendLeaseRequest(run_id=run_id, lease_id=lease_id), timeout=TIMEOUT)


def test_unknown_run_is_not_found(stub: pb_grpc.OrchestratorStub) -> None:
    leased = _lease_new_run(stub, "probe-not-found")
    # A well-formed id that no run has: the real id with its last character changed.
    unknown = leased.run_id[:-1] + ("1" if leased.run_id[-1] == "0" else "0")
    for label, call in [
        ("GetRun", lambda: stub.GetRun(pb.GetRunRequest(run_id=unknown), timeout=TIMEOUT)),
        ("CancelRun", lambda: stub.CancelRun(pb.CancelRunRequest(run_id=unknown), timeout=TIMEOUT)),
    ]:
        error = _error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND, (label, error.details())
    assert stub.GetRun(pb.GetRunRequest(run_id=leased.run_id), timeout=TIMEOUT).run.id == leased.run_id


def test_stale_lease_is_failed_precondition(stub: pb_grpc.OrchestratorStub) -> None:
    stale = _lease_new_run(stub, "probe-stale")
    # Hand the run back, take it again: the first lease is now stale.
    stub.ReleaseWork(pb.ReleaseWorkRequest(run_id=stale.run_id, lease_id=stale.lease_id), timeout=TIMEOUT)
    current = _poll(stub, stale.run_id)
    assert current.lease_id != stale.lease_id

    output = pb.StepOutput(output_json=json.dumps({"from": "stale"}))
    error = _error(
        lambda: stub.CompleteStep(
            pb.CompleteStepRequest(
                run_id=stale.run_id, lease_id=stale.lease_id, step_id="s", step_output=output
            ),
            timeout=TIMEOUT,
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    error = _error(
        lambda: stub.ExtendLease(
            pb.ExtendLeaseRequest(run_id=stale.run_id, lease_id=stale.lease_id), timeout=TIMEOUT
        )
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
    # The stale completion changed nothing.
    assert list(stub.GetRun(pb.GetRunRequest(run_id=stale.run_id), timeout=TIMEOUT).run.steps) == []

    # The current lease works; the same completion sent twice gets the same answer.
    finish = pb.CompleteStepRequest(
        run_id=current.run_id,
        lease_id=current.lease_id,
        run_completed=pb.RunCompleted(output_json='{"ok": true}'),
    )
    first = stub.CompleteStep(finish, timeout=TIMEOUT)
    assert first.directive == pb.DIRECTIVE_STOP
    assert stub.CompleteStep(finish, timeout=TIMEOUT).directive == first.directive
    run = stub.GetRun(pb.GetRunRequest(run_id=current.run_id), timeout=TIMEOUT).run
    assert run.status == pb.RUN_STATUS_COMPLETED and json.loads(run.output_json) == {"ok": True}

    # A run that ended cannot be cancelled.
    error = _error(lambda: stub.CancelRun(pb.CancelRunRequest(run_id=current.run_id), timeout=TIMEOUT))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
