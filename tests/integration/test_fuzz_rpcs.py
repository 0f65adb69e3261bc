"""Fuzzing every RPC of a real orchestrator: messages generated from the contract's descriptors (names,
JSON, ids, enums, numbers from the edges, oneofs and nesting) and raw byte strings (random, and valid
messages with bytes flipped) sent through a generic channel call.

Every answer must be a proper status (never UNKNOWN or INTERNAL); the server stays up and healthy; the
database stays consistent: every run id SendEvent returned is listed and readable, and nothing else is.
Bounded: a few hundred examples, no per-example deadline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support import ProcessGroup
from tests.support.secure import ConfiguredOrchestrator, channel, start_configured

SERVICE = pb.DESCRIPTOR.services_by_name["Orchestrator"]
METHODS = {m.name: m for m in SERVICE.methods}
APP, FUNCTION = "fz-app", "fz-fn"
EVENT_NAMES = ("fz/a", "fz/b", "api/contact_list.uploaded")
# Answers a well-behaved server may give to arbitrary input. DEADLINE_EXCEEDED is the client's own
# deadline on a long poll that found nothing to hand out.
PROPER = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
CALL_TIMEOUT = 5.0
EXAMPLES = 150  # per strategy: about 20 s in all on a quiet machine

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}

names = (
    st.sampled_from(EVENT_NAMES)
    | st.text(max_size=12)
    | st.text(alphabet="ab/._-:", min_size=1, max_size=300)
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
json_texts = (
    json_values.map(json.dumps)
    | st.sampled_from(["", "{", "[1,", "NaN", "{}", "null", '"x"'])
    | st.text(max_size=20)
)


def _string(field: FieldDescriptor) -> st.SearchStrategy[str]:
    if field.name.endswith("_json"):
        return json_texts
    if field.name in ("name", "event", "app_id", "function_id", "function_ids"):
        return st.sampled_from((APP, FUNCTION)) | names
    return st.text(max_size=40) | st.sampled_from(["", "x" * 300])


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _string(field)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)  # proto3 enums are open: unknown numbers are legal on the wire
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=20)
    low, high = _INT_RANGES.get(kind, (-(2**31), 2**31 - 1))
    if field.name == "max_wait_ms":
        # Keep long polls short: 0 would mean the server's default wait (30 s).
        return st.integers(1, 50) | st.integers(low, -1)
    return st.integers(low, high) | st.integers(-2, 3)


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with any subset of fields set to generated values."""
    cls = message_factory.GetMessageClass(descriptor)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 3:
                continue
            value: st.SearchStrategy[Any] = st.deferred(lambda f=field: messages(f.message_type, depth + 1))
        else:
            value = _scalar(field)
        if field.is_repeated:
            value = st.lists(value, max_size=3)
        fields[field.name] = value
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: cls(**kw))


# Well-formed requests mixed in, so the fuzz also reaches the store: runs start, get leased, and leased
# runs receive fuzzed completions.
well_formed_events = st.builds(
    pb.Event,
    name=st.sampled_from(EVENT_NAMES),
    data_json=json_values.map(lambda v: json.dumps({"v": v})),
    id=st.none() | st.text(alphabet="abcdef0123", min_size=1, max_size=8),
)
well_formed_sends = st.lists(well_formed_events, min_size=1, max_size=3).map(
    lambda events: pb.SendEventRequest(events=events)
)
well_formed_polls = st.builds(
    pb.PollWorkRequest, app_id=st.just(APP), worker_id=st.just("fuzzer"), max_items=st.integers(1, 3),
    max_wait_ms=st.just(1),
)  # fmt: skip


def _mutated(data: st.DataObject) -> bytes:
    method = data.draw(st.sampled_from(sorted(METHODS)))
    raw = bytearray(data.draw(messages(METHODS[method].input_type)).SerializeToString())
    for _ in range(data.draw(st.integers(1, 4))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    return bytes(raw)


@pytest.fixture
def server(tmp_path: Path, processes: ProcessGroup) -> ConfiguredOrchestrator:
    return start_configured(tmp_path, processes)


@pytest.fixture
def chan(server: ConfiguredOrchestrator) -> Iterator[grpc.Channel]:
    with channel(server.target) as opened:
        yield opened


class Ledger:
    """What the fuzzer was told: run ids of accepted events, and every status seen."""

    def __init__(self) -> None:
        self.run_ids: set[str] = set()
        self.leases: list[tuple[str, str]] = []
        self.codes: dict[str, set[str]] = {}

    def record(self, rpc: str, code: grpc.StatusCode, details: str | None) -> None:
        self.codes.setdefault(rpc, set()).add(code.name)
        assert code in PROPER, f"{rpc} answered {code.name}: {details}"


def _call(chan: grpc.Channel, rpc: str, payload: bytes, ledger: Ledger) -> None:
    call = chan.unary_unary(f"/durable.v1.Orchestrator/{rpc}")
    try:
        reply = call(payload, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        ledger.record(rpc, exc.code(), exc.details())
        return
    ledger.record(rpc, grpc.StatusCode.OK, None)
    if rpc == "SendEvent":
        ledger.run_ids.update(pb.SendEventResponse.FromString(reply).run_ids)
    if rpc == "PollWork":
        items = pb.PollWorkResponse.FromString(reply).items
        ledger.leases.extend((item.run_id, item.lease_id) for item in items)


def test_fuzzed_rpcs_get_proper_statuses_and_leave_a_consistent_database(
    chan: grpc.Channel, server: ConfiguredOrchestrator
) -> None:
    stub = pb_grpc.OrchestratorStub(chan)
    stub.RegisterFunctions(
        pb.RegisterFunctionsRequest(
            app_id=APP,
            functions=[
                pb.FunctionConfig(function_id=FUNCTION, triggers=[pb.Trigger(event=n) for n in EVENT_NAMES])
            ],
        ),
        timeout=CALL_TIMEOUT,
    )
    ledger = Ledger()
    tuned = settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )

    @tuned
    @given(st.data())
    def generated(data: st.DataObject) -> None:
        rpc = data.draw(st.sampled_from(sorted(METHODS)))
        request = data.draw(messages(METHODS[rpc].input_type))
        if rpc == "SendEvent" and data.draw(st.booleans()):
            request = data.draw(well_formed_sends)
        if rpc == "PollWork" and data.draw(st.booleans()):
            request = data.draw(well_formed_polls)
        if (
            rpc in ("CompleteStep", "ExtendLease", "ReleaseWork")
            and ledger.leases
            and data.draw(st.booleans())
        ):
            request.run_id, request.lease_id = data.draw(st.sampled_from(ledger.leases))
        _call(chan, rpc, request.SerializeToString(), ledger)

    @tuned
    @given(st.data())
    def raw(data: st.DataObject) -> None:
        rpc = data.draw(st.sampled_from(sorted(METHODS)))
        payload = _mutated(data) if data.draw(st.booleans()) else data.draw(st.binary(max_size=200))
        _call(chan, rpc, payload, ledger)

    generated()
    raw()

    # Every RPC was exercised, and some requests got through validation (the fuzz reached the store).
    assert set(ledger.codes) == set(METHODS), ledger.codes
    assert ledger.run_ids, "no generated event started a run"
    assert ledger.leases, "no generated poll leased a run"

    assert server.is_running()
    health = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT)
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    # Fuzzed completions may send events (more runs): every reported run is listed, and every listed
    # run is whole.
    listed = stub.ListRuns(pb.ListRunsRequest(limit=1000), timeout=CALL_TIMEOUT).runs
    assert ledger.run_ids <= {r.id for r in listed} and len(listed) < 1000
    for run_id in {r.id for r in listed}:
        run = stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=CALL_TIMEOUT).run
        # Fuzzed registrations may add apps listening to the same names.
        assert run.id == run_id and run.app_id and run.event.name, run
        assert run.status != pb.RUN_STATUS_UNSPECIFIED, run
        assert [s.id for s in run.steps] == list(dict.fromkeys(s.id for s in run.steps)), run
