"""Limits against real orchestrators: the defaults (256 KiB events, batches of 1,000 events, names) on
one server, lowered limits set by flags (output size, steps per run, batch, event size, gRPC message
size) on another. Every refusal is RESOURCE_EXHAUSTED or INVALID_ARGUMENT naming the field and the limit,
and the SDK raises the matching typed error."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from sdk_python import Client, Event, ResourceExhaustedError
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support import ProcessGroup
from tests.support.secure import ConfiguredOrchestrator, channel, start_configured

TIMEOUT = 15.0
KIB = 1024
APP, FUNCTION, TRIGGER = "limits-app", "many-steps", "limits/start"


@pytest.fixture
def default_server(tmp_path: Path, processes: ProcessGroup) -> ConfiguredOrchestrator:
    return start_configured(tmp_path, processes, name="defaults")


@pytest.fixture
def low_server(tmp_path: Path, processes: ProcessGroup) -> ConfiguredOrchestrator:
    return start_configured(
        tmp_path,
        processes,
        "--max-event-bytes", "1024",
        "--max-batch-events", "5",
        "--max-output-bytes", "2048",
        "--max-steps-per-run", "3",
        "--max-message-bytes", str(1024 * KIB + 4 * KIB),
        name="lowered",
    )  # fmt: skip


def _stub(server: ConfiguredOrchestrator) -> Iterator[pb_grpc.OrchestratorStub]:
    with channel(server.target) as chan:
        yield pb_grpc.OrchestratorStub(chan)


@pytest.fixture
def default_stub(default_server: ConfiguredOrchestrator) -> Iterator[pb_grpc.OrchestratorStub]:
    yield from _stub(default_server)


@pytest.fixture
def low_stub(low_server: ConfiguredOrchestrator) -> Iterator[pb_grpc.OrchestratorStub]:
    yield from _stub(low_server)


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    try:
        result = call()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected a refusal, got {result!r}")


def _event(name: str = "limits/ping", data_json: str = "{}") -> pb.Event:
    return pb.Event(name=name, data_json=data_json)


def _send(stub: pb_grpc.OrchestratorStub, *events: pb.Event) -> Callable[[], object]:
    return lambda: stub.SendEvent(pb.SendEventRequest(events=list(events)), timeout=TIMEOUT)


def _padded(total_bytes: int) -> str:
    """A JSON object of exactly `total_bytes` bytes."""
    return json.dumps({"pad": "x" * (total_bytes - len('{"pad": ""}'))})


def test_default_limits(
    default_stub: pb_grpc.OrchestratorStub, default_server: ConfiguredOrchestrator
) -> None:
    stub = default_stub
    # A batch of 1,000 events is accepted; 1,001 is RESOURCE_EXHAUSTED naming the limit.
    sent = stub.SendEvent(pb.SendEventRequest(events=[_event() for _ in range(1000)]), timeout=TIMEOUT)
    assert len(sent.ids) == 1000
    err = _refused(_send(stub, *[_event() for _ in range(1001)]))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details() == "events: 1001 events in one request, the limit (max_batch_events) is 1000"

    # An event just under 256 KiB passes; one over it is refused, naming the event and the limit.
    stub.SendEvent(pb.SendEventRequest(events=[_event(data_json=_padded(255 * KIB))]), timeout=TIMEOUT)
    err = _refused(_send(stub, _event(), _event(data_json=_padded(257 * KIB))))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details().startswith("events[1]: the event is ")
    assert err.details().endswith("the limit (max_event_bytes) is 256 KiB")

    # Names: api/contact_list.uploaded style is valid; other characters or > 256 characters are not.
    stub.SendEvent(pb.SendEventRequest(events=[_event("api/contact_list.uploaded:v-2")]), timeout=TIMEOUT)
    for bad in ("has space", "ümlaut", "semi;colon", "x" * 257, ""):
        err = _refused(_send(stub, _event(bad)))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert err.details() == "events[0].name: must be 1-256 characters of letters, digits and / . _ - :"

    # JSON validity.
    err = _refused(_send(stub, _event(data_json='{"unclosed": ')))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("events[0].data_json: not valid JSON")

    # The SDK raises the typed error.
    client = Client("tests", default_server.target)
    try:
        with pytest.raises(ResourceExhaustedError, match="max_event_bytes"):
            client.send_sync(Event(name="limits/big", data={"pad": "x" * (300 * KIB)}))
    finally:
        client.close()


def _lease_run(stub: pb_grpc.OrchestratorStub) -> pb.WorkItem:
    stub.RegisterFunctions(
        pb.RegisterFunctionsRequest(
            app_id=APP,
            functions=[pb.FunctionConfig(function_id=FUNCTION, triggers=[pb.Trigger(event=TRIGGER)])],
        ),
        timeout=TIMEOUT,
    )
    sent = stub.SendEvent(pb.SendEventRequest(events=[_event(TRIGGER)]), timeout=TIMEOUT)
    reply = stub.PollWork(
        pb.PollWorkRequest(app_id=APP, worker_id="limits-test", max_items=1, max_wait_ms=10_000),
        timeout=TIMEOUT,
    )
    assert [i.run_id for i in reply.items] == list(sent.run_ids), reply
    item: pb.WorkItem = reply.items[0]
    return item


def _output(item: pb.WorkItem, step_id: str, output_json: str) -> pb.CompleteStepRequest:
    return pb.CompleteStepRequest(
        run_id=item.run_id,
        lease_id=item.lease_id,
        step_id=step_id,
        step_output=pb.StepOutput(output_json=output_json),
    )


def test_lowered_limits_from_flags(low_stub: pb_grpc.OrchestratorStub) -> None:
    stub = low_stub
    err = _refused(_send(stub, *[_event() for _ in range(6)]))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "events: 6 events in one request, the limit (max_batch_events) is 5",
    )
    err = _refused(_send(stub, _event(data_json=_padded(1100))))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.details().endswith("the limit (max_event_bytes) is 1 KiB")

    item = _lease_run(stub)
    # Step output: 2 KiB passes, more is refused (and records nothing).
    stub.CompleteStep(_output(item, "s1", _padded(2048)), timeout=TIMEOUT)
    err = _refused(lambda: stub.CompleteStep(_output(item, "s2", _padded(2049)), timeout=TIMEOUT))
    assert (err.code(), err.details()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "step_output.output_json: 2049 bytes of JSON, the limit (max_output_bytes) is 2 KiB",
    )
    err = _refused(
        lambda: stub.CompleteStep(
            pb.CompleteStepRequest(
                run_id=item.run_id,
                lease_id=item.lease_id,
                step_id="s2",
                step_output=pb.StepOutput(output_json="{"),
            ),
            timeout=TIMEOUT,
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("step_output.output_json: not valid JSON")

    # Steps per run: the 4th step is refused, naming the run and the limit.
    stub.CompleteStep(_output(item, "s2", "2"), timeout=TIMEOUT)
    stub.CompleteStep(_output(item, "s3", "3"), timeout=TIMEOUT)
    err = _refused(lambda: stub.CompleteStep(_output(item, "s4", "4"), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_steps_per_run" in err.details() and "is 3" in err.details(), err.details()
    run = stub.GetRun(pb.GetRunRequest(run_id=item.run_id), timeout=TIMEOUT).run
    assert [s.id for s in run.steps] == ["s1", "s2", "s3"]

    # The gRPC message limit matches the setting: a larger message is refused by gRPC itself.
    err = _refused(
        lambda: stub.CompleteStep(_output(item, "s4", json.dumps("x" * (1100 * KIB))), timeout=TIMEOUT)
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(1024 * KIB + 4 * KIB) in err.details(), err.details()
