"""The gRPC API in process: ``OrchestratorServer`` on a free port and a SQLite file, called through
the generated stubs. Bad input to every RPC, status mapping, long polls, timers and shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.config import Settings
from orchestrator.server import OrchestratorServer
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc

Stub = Any


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[OrchestratorServer]:
    srv = OrchestratorServer(Settings(port=0, db_url=f"sqlite:///{tmp_path / 'o.db'}"))
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def stub(server: OrchestratorServer) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.OrchestratorStub(channel)


async def register(stub: Stub, app: str = "crm", fn: str = "f", event: str = "a/b") -> None:
    await stub.RegisterFunctions(
        pb.RegisterFunctionsRequest(
            app_id=app, functions=[pb.FunctionConfig(function_id=fn, triggers=[pb.Trigger(event=event)])]
        )
    )


async def poll(stub: Stub, app: str = "crm", wait_ms: int = 10_000) -> pb.PollWorkResponse:
    return await stub.PollWork(pb.PollWorkRequest(app_id=app, worker_id="w1", max_wait_ms=wait_ms))


async def started_run(stub: Stub) -> pb.WorkItem:
    await register(stub)
    await stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="a/b", data_json='{"k": "v"}')]))
    (item,) = (await poll(stub)).items
    return item


def complete(item: pb.WorkItem, step_id: str = "s", **outcome: Any) -> pb.CompleteStepRequest:
    return pb.CompleteStepRequest(run_id=item.run_id, lease_id=item.lease_id, step_id=step_id, **outcome)


async def until(predicate: Any, within_s: float = 10.0) -> None:
    """Polls ``predicate`` until it holds (never a fixed sleep); fails after ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def expect_status(call: Any, code: grpc.StatusCode, *fragments: str) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, info.value.details()
    details = info.value.details() or ""
    for fragment in fragments:
        assert fragment in details
    return details


NAME_RULE = "must be 1-256 characters of letters, digits and / . _ - :"
EV = pb.Event
BAD_INPUT: list[tuple[str, Any, str]] = [
    ("SendEvent", pb.SendEventRequest(), "events: at least one"),
    (
        "SendEvent",
        pb.SendEventRequest(events=[EV(name="ok"), EV(name="ok"), EV(name="bad name")]),
        f"events[2].name: {NAME_RULE}",
    ),
    ("SendEvent", pb.SendEventRequest(events=[EV(name="")]), "events[0].name"),
    ("SendEvent", pb.SendEventRequest(events=[EV(name="x" * 257)]), "events[0].name"),
    ("SendEvent", pb.SendEventRequest(events=[EV(name="a", data_json="{nope")]), "events[0].data_json"),
    ("SendEvent", pb.SendEventRequest(events=[EV(name="a", data_json="[1]")]), "events[0].data_json"),
    ("SendEvent", pb.SendEventRequest(events=[EV(name="a", data_json='{"x": NaN}')]), "events[0].data_json"),
    ("SendEvent", pb.SendEventRequest(events=[EV(name="a", id="i" * 129)]), "events[0].id"),
    ("SendEvent", pb.SendEventRequest(events=[EV(name="a", ts_unix_ms=-1)]), "events[0].ts_unix_ms"),
    ("RegisterFunctions", pb.RegisterFunctionsRequest(), "app_id"),
    (
        "RegisterFunctions",
        pb.RegisterFunctionsRequest(app_id="crm", functions=[pb.FunctionConfig(function_id="f")]),
        "functions[0].triggers",
    ),
    (
        "RegisterFunctions",
        pb.RegisterFunctionsRequest(
            app_id="crm", functions=[pb.FunctionConfig(triggers=[pb.Trigger(event="a")])]
        ),
        "functions[0].function_id",
    ),
    (
        "RegisterFunctions",
        pb.RegisterFunctionsRequest(
            app_id="crm",
            functions=[
                pb.FunctionConfig(function_id="f", triggers=[pb.Trigger(event="a"), pb.Trigger(event="b c")])
            ],
        ),
        "functions[0].triggers[1].event",
    ),
    (
        "RegisterFunctions",
        pb.RegisterFunctionsRequest(
            app_id="crm",
            functions=[pb.FunctionConfig(function_id="f", triggers=[pb.Trigger(event="a")], retries=101)],
        ),
        "functions[0].retries",
    ),
    (
        "RegisterFunctions",
        pb.RegisterFunctionsRequest(
            app_id="crm",
            functions=[
                pb.FunctionConfig(function_id="f", triggers=[pb.Trigger(event="a")]),
                pb.FunctionConfig(function_id="f", triggers=[pb.Trigger(event="a")]),
            ],
        ),
        "functions[1].function_id",
    ),
    ("PollWork", pb.PollWorkRequest(worker_id="w"), "app_id"),
    ("PollWork", pb.PollWorkRequest(app_id="crm"), "worker_id"),
    ("PollWork", pb.PollWorkRequest(app_id="crm", worker_id="w", max_items=101), "max_items"),
    ("PollWork", pb.PollWorkRequest(app_id="crm", worker_id="w", max_wait_ms=60_001), "max_wait_ms"),
    (
        "PollWork",
        pb.PollWorkRequest(app_id="crm", worker_id="w", function_ids=["ok", "n o"]),
        "function_ids[1]",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(lease_id="l", run_completed=pb.RunCompleted(output_json="1")),
        "run_id",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(run_id="r", run_completed=pb.RunCompleted(output_json="1")),
        "lease_id",
    ),
    ("CompleteStep", pb.CompleteStepRequest(run_id="r", lease_id="l"), "outcome"),
    (
        "CompleteStep",
        pb.CompleteStepRequest(run_id="r", lease_id="l", step_output=pb.StepOutput(output_json="1")),
        "step_id",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r", lease_id="l", step_id="s", step_output=pb.StepOutput(output_json="{bad")
        ),
        "step_output.output_json",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r", lease_id="l", step_id="s", step_error=pb.StepError(retriable=True)
        ),
        "step_error.error",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r",
            lease_id="l",
            step_id="s",
            step_error=pb.StepError(error=pb.Error(name="E"), retry_after_ms=-5),
        ),
        "step_error.retry_after_ms",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(run_id="r", lease_id="l", step_id="s", sleep=pb.SleepRequest()),
        "sleep.until_unix_ms",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r",
            lease_id="l",
            step_id="s",
            wait_for_event=pb.WaitForEventRequest(event="", timeout_unix_ms=1),
        ),
        "wait_for_event.event",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r",
            lease_id="l",
            step_id="s",
            wait_for_event=pb.WaitForEventRequest(event="a", match="data..x", timeout_unix_ms=1),
        ),
        "wait_for_event.match",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r", lease_id="l", step_id="s", wait_for_event=pb.WaitForEventRequest(event="a")
        ),
        "wait_for_event.timeout_unix_ms",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r",
            lease_id="l",
            step_id="s",
            send_events=pb.SendEventsRequest(events=[EV(name="a"), EV(name="!")]),
        ),
        "send_events.events[1].name",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(run_id="r", lease_id="l", run_completed=pb.RunCompleted(output_json="")),
        "run_completed.output_json",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(run_id="r", lease_id="l", run_failed=pb.RunFailed()),
        "run_failed.error",
    ),
    (
        "CompleteStep",
        pb.CompleteStepRequest(
            run_id="r", lease_id="l", started_unix_ms=-1, run_completed=pb.RunCompleted(output_json="1")
        ),
        "started_unix_ms",
    ),
    ("ExtendLease", pb.ExtendLeaseRequest(lease_id="l"), "run_id"),
    ("ExtendLease", pb.ExtendLeaseRequest(run_id="r"), "lease_id"),
    ("ReleaseWork", pb.ReleaseWorkRequest(run_id="r"), "lease_id"),
    ("ReleaseWork", pb.ReleaseWorkRequest(run_id="r" * 129, lease_id="l"), "run_id"),
    ("GetRun", pb.GetRunRequest(), "run_id"),
    ("ListRuns", pb.ListRunsRequest(limit=1001), "limit"),
    ("ListRuns", pb.ListRunsRequest(limit=-1), "limit"),
    ("ListRuns", pb.ListRunsRequest(status=42), "status"),
    ("ListRuns", pb.ListRunsRequest(function_id="a b"), "function_id"),
    ("ListRuns", pb.ListRunsRequest(app_id="a b"), "app_id"),
    ("CancelRun", pb.CancelRunRequest(), "run_id"),
]


@pytest.mark.parametrize(("rpc", "request_", "field"), BAD_INPUT, ids=[f"{r}-{f}" for r, _, f in BAD_INPUT])
async def test_bad_input_is_invalid_argument_naming_the_field(
    stub: Stub, rpc: str, request_: Any, field: str
) -> None:
    details = await expect_status(getattr(stub, rpc)(request_), grpc.StatusCode.INVALID_ARGUMENT, field)
    assert details.startswith(field.split(":")[0])


async def test_every_rpc_has_a_bad_input_case() -> None:
    rpcs = {m.name for m in pb.DESCRIPTOR.services_by_name["Orchestrator"].methods}
    assert rpcs == {rpc for rpc, _, _ in BAD_INPUT}


async def test_an_oversized_output_is_rejected_naming_the_field(stub: Stub) -> None:
    item = await started_run(stub)
    big = json.dumps("x" * (4 * 1024 * 1024))
    await expect_status(
        stub.CompleteStep(complete(item, step_output=pb.StepOutput(output_json=big))),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "step_output.output_json",
    )


async def test_status_mapping_of_domain_errors(stub: Stub) -> None:
    await expect_status(stub.GetRun(pb.GetRunRequest(run_id="nope")), grpc.StatusCode.NOT_FOUND, "nope")
    await expect_status(stub.CancelRun(pb.CancelRunRequest(run_id="nope")), grpc.StatusCode.NOT_FOUND)
    item = await started_run(stub)
    await expect_status(
        stub.ExtendLease(pb.ExtendLeaseRequest(run_id=item.run_id, lease_id="not-mine")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "stale",
    )
    await stub.CompleteStep(complete(item, run_completed=pb.RunCompleted(output_json='"done"')))
    await expect_status(
        stub.CancelRun(pb.CancelRunRequest(run_id=item.run_id)), grpc.StatusCode.FAILED_PRECONDITION, "ended"
    )


async def test_run_lifecycle_through_the_api(stub: Stub) -> None:
    item = await started_run(stub)
    assert json.loads(item.event.data_json) == {"k": "v"}
    step = await stub.CompleteStep(complete(item, "one", step_output=pb.StepOutput(output_json='{"a":1}')))
    assert step.directive == pb.DIRECTIVE_CONTINUE and step.output_json == '{"a": 1}'
    extended = await stub.ExtendLease(pb.ExtendLeaseRequest(run_id=item.run_id, lease_id=item.lease_id))
    assert extended.lease_expires_unix_ms >= item.lease_expires_unix_ms
    await stub.CompleteStep(complete(item, run_completed=pb.RunCompleted(output_json="[1]")))
    run = (await stub.GetRun(pb.GetRunRequest(run_id=item.run_id))).run
    assert run.status == pb.RUN_STATUS_COMPLETED and run.output_json == "[1]"
    assert [(s.id, s.kind, s.status, s.attempts) for s in run.steps] == [
        ("one", pb.STEP_KIND_RUN, pb.STEP_STATUS_COMPLETED, 1)
    ]
    listed = (await stub.ListRuns(pb.ListRunsRequest(status=pb.RUN_STATUS_COMPLETED))).runs
    assert [r.id for r in listed] == [item.run_id] and list(listed[0].steps) == []


async def test_a_parked_poll_wakes_as_soon_as_an_event_starts_a_run(stub: Stub) -> None:
    await register(stub)
    started = time.monotonic()
    pending = asyncio.ensure_future(poll(stub, wait_ms=20_000))
    await asyncio.sleep(0)  # let the poll reach the server (its result must not depend on this)
    await stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="a/b")]))
    response = await asyncio.wait_for(pending, timeout=15)
    assert len(response.items) == 1
    assert time.monotonic() - started < 10


async def test_an_idle_poll_answers_empty_after_max_wait(stub: Stub) -> None:
    started = time.monotonic()
    response = await poll(stub, app="idle", wait_ms=300)
    assert list(response.items) == []
    assert 0.25 <= time.monotonic() - started < 5


async def test_a_sleep_hands_the_run_back_when_it_ends(stub: Stub) -> None:
    item = await started_run(stub)
    until = int(time.time() * 1000) + 400
    stop = await stub.CompleteStep(complete(item, "nap", sleep=pb.SleepRequest(until_unix_ms=until)))
    assert stop.directive == pb.DIRECTIVE_STOP
    response = await poll(stub, wait_ms=15_000)  # parked until the timer fires and wakes it
    assert time.time() * 1000 >= until
    (again,) = response.items
    assert [(s.id, s.status) for s in again.steps] == [("nap", pb.STEP_STATUS_COMPLETED)]


async def test_a_wait_resumed_by_an_event_sent_through_the_api(stub: Stub) -> None:
    await register(stub, event="up")
    await stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="up", data_json='{"id": 7}')]))
    (item,) = (await poll(stub)).items
    wait = pb.WaitForEventRequest(
        event="rev", match="data.id", timeout_unix_ms=int(time.time() * 1000) + 60_000
    )
    assert (await stub.CompleteStep(complete(item, "w", wait_for_event=wait))).directive == pb.DIRECTIVE_STOP
    pending = asyncio.ensure_future(poll(stub, wait_ms=20_000))
    await stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="rev", id="r8", data_json='{"id": 8}')]))
    await stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="rev", id="r7", data_json='{"id": 7}')]))
    (resumed,) = (await asyncio.wait_for(pending, timeout=15)).items
    assert json.loads(resumed.steps[0].output_json)["id"] == "r7"


async def test_shutdown_ends_parked_polls_empty(tmp_path: Path) -> None:
    srv = OrchestratorServer(Settings(port=0, db_url=f"sqlite:///{tmp_path / 'o.db'}"))
    await srv.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        await register(stub)
        pending = asyncio.ensure_future(poll(stub, wait_ms=60_000))
        await until(lambda: srv.orchestrator.signals.waiting("crm") > 0)
        started = time.monotonic()
        await srv.stop()
        response = await asyncio.wait_for(pending, timeout=10)
        assert list(response.items) == []
        assert time.monotonic() - started < 4  # well within the drain grace


async def test_a_cancelled_poll_leaves_no_subscription_behind(server: OrchestratorServer, stub: Stub) -> None:
    await register(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.PollWork(pb.PollWorkRequest(app_id="crm", worker_id="w", max_wait_ms=30_000), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: server.orchestrator.signals.waiting("crm") == 0)
    await stub.SendEvent(pb.SendEventRequest(events=[pb.Event(name="a/b")]))
    assert len((await poll(stub)).items) == 1


async def test_an_expired_lease_hands_the_run_to_another_poller(tmp_path: Path) -> None:
    srv = OrchestratorServer(Settings(port=0, db_url=f"sqlite:///{tmp_path / 'o.db'}", lease_seconds=0.5))
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            item = await started_run(stub)  # taken by a worker that then goes silent
            (again,) = (await poll(stub, wait_ms=15_000)).items  # woken when the lease expires
            assert again.run_id == item.run_id and again.lease_id != item.lease_id
            await expect_status(
                stub.CompleteStep(complete(item, step_output=pb.StepOutput(output_json="1"))),
                grpc.StatusCode.FAILED_PRECONDITION,
                "stale",
            )
    finally:
        await srv.stop()


async def test_a_nul_in_error_texts_from_user_code_is_stored_as_a_replacement_character(db_url: str) -> None:
    # An exception's text may hold any character; PostgreSQL's text type refuses NUL (the report of
    # the failure answered INTERNAL there). Both stores keep it as U+FFFD, so a run reads the same.
    srv = OrchestratorServer(Settings(port=0, db_url=db_url))
    await srv.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{srv.port}") as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            item = await started_run(stub)
            error = pb.Error(name="Bad\x00Byte", message="got \x00 at 3", stack="line\x001")
            await stub.CompleteStep(complete(item, step_error=pb.StepError(error=error, retriable=False)))
            await stub.CompleteStep(complete(item, run_failed=pb.RunFailed(error=error)))
            run = (await stub.GetRun(pb.GetRunRequest(run_id=item.run_id))).run
    finally:
        await srv.stop()
    expected = ("Bad\ufffdByte", "got \ufffd at 3", "line\ufffd1")
    (step,) = run.steps
    assert (step.error.name, step.error.message, step.error.stack) == expected
    assert (run.error.name, run.error.message, run.error.stack) == expected


async def test_an_undecodable_request_is_invalid_argument_every_time_and_a_valid_one_still_works(
    server: OrchestratorServer,
) -> None:
    # The decoding handler is built once per method and reused: every call still decodes its own
    # bytes. (0x0a then a length past the end: not a SendEventRequest.)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw = channel.unary_unary("/durable.v1.Orchestrator/SendEvent")
        other = channel.unary_unary("/durable.v1.Orchestrator/GetRun")
        for _ in range(3):
            await expect_status(
                raw(b"\x0a\x7f"), grpc.StatusCode.INVALID_ARGUMENT, "not a valid SendEvent request message"
            )
            await expect_status(
                other(b"\x0a\x7f"), grpc.StatusCode.INVALID_ARGUMENT, "not a valid GetRun request message"
            )
        valid = pb.SendEventRequest(events=[pb.Event(name="a/b", data_json="{}")]).SerializeToString()
        reply = pb.SendEventResponse.FromString(await raw(valid))
        assert len(reply.ids) == 1
