"""Conversions between the SDK's records and the wire: JSON text, Unix-ms instants, protobuf messages."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python.records import (
    ErrorInfo,
    Event,
    Run,
    RunStatus,
    StepAttemptRecord,
    StepKind,
    StepRecord,
    StepStatus,
)

MAX_OUTPUT_BYTES = 4 * 1024 * 1024
"""The orchestrator's limit on one step output, from the proto (StepOutput.output_json)."""

_RUN_STATUS_NAMES: dict[int, RunStatus] = {
    pb.RUN_STATUS_RUNNING: "running",
    pb.RUN_STATUS_COMPLETED: "completed",
    pb.RUN_STATUS_FAILED: "failed",
    pb.RUN_STATUS_CANCELLED: "cancelled",
}
_RUN_STATUS_VALUES: dict[str, pb.RunStatus] = {
    name: cast(pb.RunStatus, value) for value, name in _RUN_STATUS_NAMES.items()
}

STEP_STATUS_NAMES: dict[int, StepStatus] = {
    pb.STEP_STATUS_RUNNING: "running",
    pb.STEP_STATUS_COMPLETED: "completed",
    pb.STEP_STATUS_FAILED: "failed",
    pb.STEP_STATUS_WAITING: "waiting",
    pb.STEP_STATUS_SLEEPING: "sleeping",
}

STEP_KIND_NAMES: dict[int, StepKind] = {
    pb.STEP_KIND_RUN: "run",
    pb.STEP_KIND_SLEEP: "sleep",
    pb.STEP_KIND_WAIT_FOR_EVENT: "wait_for_event",
    pb.STEP_KIND_SEND_EVENT: "send_event",
}


class NotSerialisableError(TypeError):
    """A value that must travel as JSON cannot be encoded."""


def now_ms() -> int:
    """The current instant in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def datetime_to_ms(value: datetime) -> int:
    """A timezone-aware datetime as Unix milliseconds; naive datetimes are refused, never guessed."""
    if value.tzinfo is None:
        raise ValueError("datetime must be timezone-aware (e.g. datetime.now(UTC))")
    return int(value.timestamp() * 1000)


def ms_to_datetime(ms: int) -> datetime | None:
    """Unix milliseconds as a UTC datetime; 0 (the proto's "not set") is None."""
    if ms == 0:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


# One encoder for every call: ``json.dumps`` with options builds an encoder per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def encode_json(value: Any, what: str) -> str:
    """`value` as compact JSON text, or `NotSerialisableError` naming `what` and the reason.

    NaN and infinities are refused: they are not JSON and other languages could not read them back.
    """
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotSerialisableError(f"{what} is not JSON-serialisable: {exc}") from exc


def decode_json(text: str) -> Any:
    """JSON text as Python values; empty text is None. Text that is not JSON is returned unchanged
    rather than lost (it can only come from a non-SDK writer)."""
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def new_event_id() -> str:
    """A fresh, globally unique event id: a random (version 4) UUID as 32 hex digits. Made from the
    random bytes directly: a `uuid.UUID` costs four times as much (measured on an idle process, which
    is how a lone send finds it), on the way to every event's ingest."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
    return raw.hex()


def stamp_event(event: Event) -> Event:
    """The event with `id` and `ts` filled in when missing, so every retry of a send carries the same
    identity and the orchestrator ingests it once."""
    if not isinstance(event, Event):
        raise TypeError(f"expected an Event, got {type(event).__name__}")
    if event.id and event.ts is not None:
        return event
    return Event(name=event.name, data=event.data, id=event.id or new_event_id(),
                 ts=event.ts if event.ts is not None else now_ms())


def event_to_pb(event: Event) -> pb.Event:
    """An event for the wire; its data must be a JSON-serialisable mapping."""
    if not isinstance(event.data, Mapping):
        raise TypeError(f"event {event.name!r}: data must be a dict, got {type(event.data).__name__}")
    return pb.Event(
        id=event.id or "",
        name=event.name,
        data_json=encode_json(dict(event.data), f"event {event.name!r} data"),
        ts_unix_ms=event.ts or 0,
    )


def event_from_pb(event: pb.Event) -> Event:
    """An event from the wire."""
    data = decode_json(event.data_json)
    return Event(
        name=event.name,
        data=data if isinstance(data, dict) else {},
        id=event.id or None,
        ts=event.ts_unix_ms or None,
    )


def event_from_json(value: Any) -> Event | None:
    """The event a wait_for_event resumed with, from its JSON form {"id","name","data","ts"};
    None (the wait timed out) stays None."""
    if not isinstance(value, dict):
        return None
    data = value.get("data")
    ts = value.get("ts")
    return Event(
        name=str(value.get("name", "")),
        data=data if isinstance(data, dict) else {},
        id=str(value["id"]) if value.get("id") else None,
        ts=int(ts) if isinstance(ts, int | float) and ts else None,
    )


def error_to_pb(error: ErrorInfo) -> pb.Error:
    """An error for the wire."""
    return pb.Error(name=error.name, message=error.message, stack=error.stack)


def error_from_pb(message: pb.Error, present: bool) -> ErrorInfo | None:
    """An error from the wire, or None when the field was not set."""
    if not present:
        return None
    return ErrorInfo(name=message.name, message=message.message, stack=message.stack)


def _unknown(value: int) -> str:
    """A status or kind this SDK does not know (a newer orchestrator): shown, not hidden."""
    return "unspecified" if value == 0 else f"unknown({value})"


def run_status_to_pb(status: str) -> pb.RunStatus:
    """A status filter for ListRuns, from its lower-case name."""
    try:
        return _RUN_STATUS_VALUES[status.lower()]
    except KeyError:
        allowed = ", ".join(sorted(_RUN_STATUS_VALUES))
        raise ValueError(f"status: {status!r} is not one of {allowed}") from None


def step_from_pb(step: pb.StepInfo) -> StepRecord:
    """A step of a run's history from the wire."""
    return StepRecord(
        id=step.id,
        kind=STEP_KIND_NAMES.get(step.kind, cast(StepKind, _unknown(step.kind))),
        status=STEP_STATUS_NAMES.get(step.status, cast(StepStatus, _unknown(step.status))),
        attempts=step.attempts,
        output=decode_json(step.output_json),
        error=error_from_pb(step.error, step.HasField("error")),
        started_at=ms_to_datetime(step.started_unix_ms),
        ended_at=ms_to_datetime(step.ended_unix_ms),
        wake_at=ms_to_datetime(step.wake_unix_ms),
        position=step.position,
        wait_event=step.wait_event or None,
        wait_match=step.wait_match or None,
        resumed_by_event_id=step.resumed_by_event_id or None,
        history=[
            StepAttemptRecord(
                attempt=a.attempt,
                started_at=ms_to_datetime(a.started_unix_ms),
                ended_at=ms_to_datetime(a.ended_unix_ms),
                failed=a.failed,
                error=error_from_pb(a.error, a.HasField("error")),
            )
            for a in step.attempt_history
        ],
    )


def run_from_pb(run: pb.Run) -> Run:
    """A run from the wire, its JSON decoded and its instants as UTC datetimes."""
    created = ms_to_datetime(run.created_unix_ms) or datetime.fromtimestamp(0, tz=UTC)
    event = event_from_pb(run.event) if run.HasField("event") else Event(name="", id=run.event_id or None)
    return Run(
        id=run.id,
        app_id=run.app_id,
        function_id=run.function_id,
        event_id=run.event_id,
        status=_RUN_STATUS_NAMES.get(run.status, cast(RunStatus, _unknown(run.status))),
        output=decode_json(run.output_json),
        error=error_from_pb(run.error, run.HasField("error")),
        steps=[step_from_pb(step) for step in run.steps],
        created_at=created,
        ended_at=ms_to_datetime(run.ended_unix_ms),
        event=event,
    )
