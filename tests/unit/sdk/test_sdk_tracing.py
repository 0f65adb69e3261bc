"""The ids the worker derives for step spans, and the attempt numbers they derive from (no
orchestrator: a stub answers CompleteStep)."""

from __future__ import annotations

import asyncio
from typing import Any

from sdk_python import _tracing
from sdk_python._execution import RunExecution
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb

RUN_ID = "01a212c3-6b71-7167-9e2b-413733cecac5"
TRACEPARENT = "00-01a212c36b7171679e2b413733cecac5-00f067aa0ba902b7-01"


class _Continue:
    """A CompleteStep that always answers CONTINUE."""

    async def CompleteStep(self, request: pb.CompleteStepRequest, **kwargs: Any) -> pb.CompleteStepResponse:  # noqa: N802
        return pb.CompleteStepResponse(directive=pb.DIRECTIVE_CONTINUE)


def test_a_step_span_id_is_a_hash_of_the_attempt_other_sdks_can_reproduce() -> None:
    # The vector docs/protocol.md gives for other SDKs.
    assert f"{_tracing.step_span_id(RUN_ID, 'enrich', 0):016x}" == "e56e332bfeecfbc3"
    ids = {_tracing.step_span_id(RUN_ID, step, n) for step in ("enrich", "enrich:1") for n in range(3)}
    assert len(ids) == 6 and 0 not in ids
    span = _tracing.StepSpan(TRACEPARENT, run_id=RUN_ID, step_id="enrich", attempt=2)
    assert span.span_id == _tracing.step_span_id(RUN_ID, "enrich", 2)
    request = pb.CompleteStepRequest()
    with span:
        pass
    span.report(request)
    assert request.step_attempt == 2 and not request.step_span_id, "the orchestrator derives the same id"


def _execution(loop: asyncio.AbstractEventLoop, *steps: pb.MemoStep, lost: int) -> RunExecution:
    item = pb.WorkItem(run_id=RUN_ID, lease_id="l", steps=steps, lost_attempts=lost, traceparent=TRACEPARENT)
    return RunExecution(item, stub=_Continue(), metadata=(), loop=loop, rpc_timeout=1.0)


DONE = pb.MemoStep(id="a", kind=pb.STEP_KIND_RUN, status=pb.STEP_STATUS_COMPLETED, output_json="1")
RETRYING = pb.MemoStep(id="b", kind=pb.STEP_KIND_RUN, status=pb.STEP_STATUS_RUNNING, attempts=1)


def test_the_first_attempt_of_an_execution_is_numbered_after_the_lost_ones() -> None:
    loop = asyncio.new_event_loop()
    try:
        execution = _execution(loop, DONE, RETRYING, lost=2)
        execution.reach("a", "run")
        # The retried step's attempt: after its failed one and the 2 lost with dead workers, as the
        # orchestrator will record it. The lost attempts are charged once.
        assert execution.next_attempt(execution.reach("b", "run")) == 3
        assert execution.next_attempt(execution.reach("c", "run")) == 0

        # Any other first outcome (here a sleep) takes them: no later attempt is numbered after them.
        execution = _execution(loop, DONE, lost=2)
        execution.reach("a", "run")
        execution.reach("nap", "sleep")
        sleep = pb.CompleteStepRequest(step_id="nap", sleep=pb.SleepRequest(until_unix_ms=1))
        loop.run_until_complete(execution.complete(sleep))
        assert execution.next_attempt(execution.reach("b", "run")) == 0
    finally:
        loop.close()


def test_the_run_parent_is_read_from_the_traceparent_as_opentelemetry_reads_it() -> None:
    # The SDK parses the W3C header itself (the propagator costs more on a run's first step);
    # every verdict must be the propagator's.
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    trace_id, span_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    headers = [
        f"00-{trace_id}-{span_id}-01", f"00-{trace_id}-{span_id}-00", f" 00-{trace_id}-{span_id}-01 ",
        f"01-{trace_id}-{span_id}-01-later-fields",  # a later version may add fields
        "", "garbage", f"ff-{trace_id}-{span_id}-01", f"00-{'0' * 32}-{span_id}-01",
        f"00-{trace_id}-{'0' * 16}-01", f"00-{trace_id}-{span_id}-01-extra",
        f"00-{trace_id.upper()}-{span_id}-01",
        f"00-{trace_id}-{span_id}-1", f"00-{trace_id[:-1]}-{span_id}-01",
    ]
    valid = 0
    for header in headers:
        expected = trace.get_current_span(propagator.extract({"traceparent": header})).get_span_context()
        parsed = _tracing.run_parent(header)
        if not expected.is_valid:
            assert parsed is None, header
            continue
        valid += 1
        assert parsed is not None, header
        assert (parsed.trace_id, parsed.span_id, parsed.trace_flags, parsed.is_remote) == (
            expected.trace_id, expected.span_id, expected.trace_flags, expected.is_remote,
        ), header
    assert valid == 4
