"""The step API user code calls through `ctx.step`: `Step` for `async def` functions, `StepSync` (same
methods, blocking) for plain `def` functions.

Every call first resolves its step against the run's memo. A completed step returns its recorded result
without running anything. A new step is executed (or requested: sleep, wait, send) and its outcome is
reported with CompleteStep; on CONTINUE the call returns the committed result (the JSON-decoded form,
the same value a replay would return), on STOP the execution ends here and the orchestrator hands the
run out again when it is ready.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar, TypeVarTuple, overload

from sdk_python import _tracing
from sdk_python._execution import RunExecution
from sdk_python._failures import classify, final
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._replay import Reached
from sdk_python._wire import (
    MAX_OUTPUT_BYTES,
    NotSerialisableError,
    datetime_to_ms,
    encode_json,
    error_to_pb,
    event_to_pb,
    now_ms,
    stamp_event,
)
from sdk_python.records import Event

__all__ = ["Step", "StepSync"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

logger = logging.getLogger("sdk_python")


class Step:
    """Steps for an `async def` function. Step ids must be unique per call site; a repeated id (a loop)
    is numbered automatically ("id", "id:1", "id:2", ...)."""

    def __init__(self, execution: RunExecution) -> None:
        self._x = execution

    @overload
    async def run(self, step_id: str, handler: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...

    @overload
    async def run(self, step_id: str, handler: Callable[[*Ts], T], *args: *Ts) -> T: ...

    async def run(self, step_id: str, handler: Callable[[*Ts], Any], *args: *Ts) -> Any:
        """Runs `handler(*args)` once and returns its result, JSON-decoded (so the value is the same on
        the first execution and on every replay). A plain function runs in a thread, a coroutine
        function on the event loop. A failure is retried alone, per the function's `retries`."""
        reached = self._x.reach(step_id, "run")
        if reached.completed:
            return reached.memoized_result()
        attempt = self._x.next_attempt(reached)
        while True:
            started = now_ms()
            span = _tracing.StepSpan(
                self._x.traceparent, run_id=self._x.run_id, step_id=reached.step_id, attempt=attempt
            )
            try:
                with span:
                    value = await self._x.call_user(handler, args)
            except Exception as exc:
                request = _run_step_request(reached, started, error=exc)
            else:
                request = _run_step_request(reached, started, value=value)
            span.report(request)
            _log_step(self._x, reached, request, attempt)
            reply = await self._x.complete(request)
            if not _retry_in_place(request, reply):
                return self._x.result(reached, reply)
            attempt += 1

    async def sleep(self, step_id: str, duration: timedelta) -> None:
        """Sleeps durably for `duration`: the run is parked and resumed by a timer that survives
        restarts of the worker and the orchestrator."""
        until = _after(duration, "duration")  # arguments are checked before the step is reached
        reached = self._x.reach(step_id, "sleep")
        if reached.completed:
            return None
        self._x.result(reached, await self._x.complete(_sleep_request(reached, until)))
        return None

    async def sleep_until(self, step_id: str, until: datetime) -> None:
        """Sleeps durably until `until` (timezone-aware); a time already past continues at once."""
        until_ms = datetime_to_ms(until)
        reached = self._x.reach(step_id, "sleep")
        if reached.completed:
            return None
        self._x.result(reached, await self._x.complete(_sleep_request(reached, until_ms)))
        return None

    async def wait_for_event(
        # `timeout` is the durable wait's deadline (inngest-py's name), not an asyncio timeout.
        self, step_id: str, *, event: str, timeout: timedelta, match: str | None = None  # noqa: ASYNC109
    ) -> Event | None:
        """Waits durably for the first event named `event` (with `match="data.x"`: whose `data.x`
        equals the triggering event's) received since the previous step; None after `timeout`."""
        timeout_ms = _after(timeout, "timeout")
        reached = self._x.reach(step_id, "wait_for_event")
        if reached.completed:
            result: Event | None = reached.memoized_result()
            return result
        request = _wait_request(reached, event, timeout_ms, match)
        result = self._x.result(reached, await self._x.complete(request))
        return result

    async def send_event(self, step_id: str, events: Event | Sequence[Event]) -> list[str]:
        """Sends events from inside the run, exactly once; returns their ids."""
        reached = self._x.reach(step_id, "send_event")
        if reached.completed:
            ids: list[str] = reached.memoized_result()
            return ids
        ids = self._x.result(reached, await self._x.complete(_send_request(self._x, reached, events)))
        return ids


class StepSync:
    """Steps for a plain `def` function: the methods of `Step`, blocking. The handler runs in a worker
    thread; step code runs right in that thread and outcomes are reported through the event loop."""

    def __init__(self, execution: RunExecution) -> None:
        self._x = execution

    @overload
    def run(self, step_id: str, handler: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T: ...

    @overload
    def run(self, step_id: str, handler: Callable[[*Ts], T], *args: *Ts) -> T: ...

    def run(self, step_id: str, handler: Callable[[*Ts], Any], *args: *Ts) -> Any:
        """Runs `handler(*args)` once and returns its result, JSON-decoded; see `Step.run`."""
        reached = self._x.reach(step_id, "run")
        if reached.completed:
            return reached.memoized_result()
        attempt = self._x.next_attempt(reached)
        while True:
            started = now_ms()
            span = _tracing.StepSpan(
                self._x.traceparent, run_id=self._x.run_id, step_id=reached.step_id, attempt=attempt
            )
            try:
                with span:
                    value = self._x.call_user_sync(handler, args)
            except Exception as exc:
                request = _run_step_request(reached, started, error=exc)
            else:
                request = _run_step_request(reached, started, value=value)
            span.report(request)
            _log_step(self._x, reached, request, attempt)
            reply = self._x.bridge(self._x.complete(request))
            if not _retry_in_place(request, reply):
                return self._x.result(reached, reply)
            attempt += 1

    def sleep(self, step_id: str, duration: timedelta) -> None:
        """Sleeps durably for `duration`; see `Step.sleep`."""
        until = _after(duration, "duration")
        reached = self._x.reach(step_id, "sleep")
        if reached.completed:
            return None
        request = _sleep_request(reached, until)
        self._x.result(reached, self._x.bridge(self._x.complete(request)))
        return None

    def sleep_until(self, step_id: str, until: datetime) -> None:
        """Sleeps durably until `until`; see `Step.sleep_until`."""
        until_ms = datetime_to_ms(until)
        reached = self._x.reach(step_id, "sleep")
        if reached.completed:
            return None
        request = _sleep_request(reached, until_ms)
        self._x.result(reached, self._x.bridge(self._x.complete(request)))
        return None

    def wait_for_event(
        self, step_id: str, *, event: str, timeout: timedelta, match: str | None = None
    ) -> Event | None:
        """Waits durably for an event; see `Step.wait_for_event`."""
        timeout_ms = _after(timeout, "timeout")
        reached = self._x.reach(step_id, "wait_for_event")
        if reached.completed:
            result: Event | None = reached.memoized_result()
            return result
        request = _wait_request(reached, event, timeout_ms, match)
        result = self._x.result(reached, self._x.bridge(self._x.complete(request)))
        return result

    def send_event(self, step_id: str, events: Event | Sequence[Event]) -> list[str]:
        """Sends events from inside the run, exactly once; see `Step.send_event`."""
        reached = self._x.reach(step_id, "send_event")
        if reached.completed:
            ids: list[str] = reached.memoized_result()
            return ids
        request = _send_request(self._x, reached, events)
        ids = self._x.result(reached, self._x.bridge(self._x.complete(request)))
        return ids


def _run_step_request(
    reached: Reached, started: int, *, value: Any = None, error: BaseException | None = None
) -> pb.CompleteStepRequest:
    """The completion of a step.run attempt: its JSON output, or its error classified for retries."""
    request = pb.CompleteStepRequest(step_id=reached.step_id, started_unix_ms=started)
    if error is None:
        try:
            output = encode_json(value, f"the output of step {reached.step_id!r}")
            size = len(output.encode())
            if size > MAX_OUTPUT_BYTES:
                raise NotSerialisableError(
                    f"the output of step {reached.step_id!r} is {size} bytes of JSON; the limit is "
                    f"{MAX_OUTPUT_BYTES} bytes"
                )
        except NotSerialisableError as exc:
            # Retrying cannot make the value encodable: fail the step at once, saying why.
            failure = final(exc)
        else:
            request.step_output.output_json = output
            request.ended_unix_ms = now_ms()
            return request
    else:
        failure = classify(error)
    request.step_error.CopyFrom(
        pb.StepError(error=error_to_pb(failure.error), retriable=failure.retriable,
                     retry_after_ms=failure.retry_after_ms)
    )
    request.ended_unix_ms = now_ms()
    return request


def _retry_in_place(request: pb.CompleteStepRequest, reply: pb.CompleteStepResponse) -> bool:
    """A CONTINUE reply to a retriable step error means "retry it now, in place" (the orchestrator may
    skip the re-poll when no delay is due); any other reply ends the step call."""
    return (
        reply.directive == pb.DIRECTIVE_CONTINUE
        and request.HasField("step_error")
        and request.step_error.retriable
    )


def _sleep_request(reached: Reached, until_ms: int) -> pb.CompleteStepRequest:
    return pb.CompleteStepRequest(step_id=reached.step_id, sleep=pb.SleepRequest(until_unix_ms=until_ms))


def _wait_request(reached: Reached, event: str, timeout_ms: int, match: str | None) -> pb.CompleteStepRequest:
    return pb.CompleteStepRequest(
        step_id=reached.step_id,
        wait_for_event=pb.WaitForEventRequest(event=event, match=match or "", timeout_unix_ms=timeout_ms),
    )


def _send_request(
    execution: RunExecution, reached: Reached, events: Event | Sequence[Event]
) -> pb.CompleteStepRequest:
    """Events get their ids before the first attempt, so a repeated completion carries the same ids."""
    batch = [events] if isinstance(events, Event) else list(events)
    try:
        wire = [event_to_pb(stamp_event(event)) for event in batch]
    except (TypeError, ValueError) as exc:
        # A payload that cannot be sent will not become sendable on a retry: fail the run saying why.
        raise execution.fail(final(exc)) from None
    return pb.CompleteStepRequest(step_id=reached.step_id, send_events=pb.SendEventsRequest(events=wire))


def _after(duration: timedelta, name: str) -> int:
    """Unix ms `duration` from now."""
    if not isinstance(duration, timedelta):
        raise TypeError(f"{name} must be a datetime.timedelta, got {type(duration).__name__}")
    return now_ms() + int(duration.total_seconds() * 1000)


def _log_step(
    execution: RunExecution, reached: Reached, request: pb.CompleteStepRequest, attempt: int
) -> None:
    took = request.ended_unix_ms - request.started_unix_ms
    if request.HasField("step_output"):
        logger.debug("run %s: step %r completed in %d ms (attempt %d)", execution.run_id, reached.step_id,
                     took, attempt)
    else:
        error = request.step_error
        logger.info("run %s: step %r failed in %d ms (attempt %d, %s): %s: %s", execution.run_id,
                    reached.step_id, took, attempt, "retriable" if error.retriable else "final",
                    error.error.name, error.error.message)

