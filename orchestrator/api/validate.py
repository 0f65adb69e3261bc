"""Request validation: proto messages in, domain requests out, ``errors.InvalidArgument`` naming the
field (``events[2].name: ...``) for anything malformed. Nothing malformed gets past this module."""

from __future__ import annotations

import re
from typing import Any

from orchestrator import errors
from orchestrator.engine import limits, matching
from orchestrator.engine.model import (
    Completion,
    ErrorInfo,
    FunctionSpec,
    NewEvent,
    Outcome,
    RunCompleted,
    RunFailed,
    RunFilter,
    RunStatus,
    SendEvents,
    Sleep,
    StepError,
    StepOutput,
    WaitForEvent,
)
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb

_NAME_RE = re.compile(r"[A-Za-z0-9/._\-:]+")
NAME_RULE = "must be 1-256 characters of letters, digits and / . _ - :"
ID_NAME_RULE = "must be 1-128 characters of letters, digits and / . _ - :"
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

RUN_STATUSES: dict[int, RunStatus] = {
    pb.RUN_STATUS_RUNNING: RunStatus.RUNNING,
    pb.RUN_STATUS_COMPLETED: RunStatus.COMPLETED,
    pb.RUN_STATUS_FAILED: RunStatus.FAILED,
    pb.RUN_STATUS_CANCELLED: RunStatus.CANCELLED,
}


def _fail(field: str, problem: str) -> errors.InvalidArgument:
    return errors.InvalidArgument(field, problem)


def name(value: str, field: str) -> str:
    """An event name or app id: 1-256 characters of letters, digits and / . _ - :"""
    if not 1 <= len(value) <= limits.MAX_NAME_CHARS or not _NAME_RE.fullmatch(value):
        raise _fail(field, NAME_RULE)
    return value


def function_id(value: str, field: str) -> str:
    """A function id: like a name, at most 128 characters."""
    if not 1 <= len(value) <= limits.MAX_ID_CHARS or not _NAME_RE.fullmatch(value):
        raise _fail(field, ID_NAME_RULE)
    return value


def identifier(value: str, field: str, *, max_chars: int = limits.MAX_ID_CHARS) -> str:
    """A required opaque id (run, lease, event, step, worker): 1..max_chars, no control characters."""
    if not value:
        raise _fail(field, "required")
    if len(value) > max_chars:
        raise _fail(field, f"must be at most {max_chars} characters")
    if _CONTROL_RE.search(value):
        raise _fail(field, "must not contain control characters")
    return value


def _json_text(value: str, field: str, max_bytes: int = limits.MAX_JSON_BYTES) -> Any:
    size = len(value.encode())
    if size > max_bytes:
        raise errors.LimitExceeded(
            f"{field}: {size} bytes of JSON, the limit (max_output_bytes) is "
            f"{limits.describe_bytes(max_bytes)}"
        )
    try:
        return matching.parse_json(value)
    except ValueError as exc:
        raise _fail(field, f"not valid JSON ({exc})") from None


def json_value(value: str, field: str, max_bytes: int = limits.MAX_JSON_BYTES) -> str:
    """Required JSON text, returned in its stored form (``json.dumps(json.loads(x))``)."""
    if value == "":
        raise _fail(field, "required (JSON text; use null for no value)")
    return matching.stored_json(_json_text(value, field, max_bytes))


def json_object(value: str, field: str) -> str:
    """JSON object text; empty means {}."""
    if value == "":
        return "{}"
    parsed = _json_text(value, field)
    if not isinstance(parsed, dict):
        raise _fail(field, "must be a JSON object")
    return matching.stored_json(parsed)


def event(msg: pb.Event, field: str, lim: limits.Limits = limits.DEFAULT_LIMITS) -> NewEvent:
    """An event to ingest, at most ``lim.max_event_bytes`` on the wire (name, id, data and time)."""
    size = msg.ByteSize()
    if size > lim.max_event_bytes:
        raise errors.LimitExceeded(
            f"{field}: the event is {size} bytes, the limit (max_event_bytes) is "
            f"{limits.describe_bytes(lim.max_event_bytes)}"
        )
    event_id = identifier(msg.id, f"{field}.id") if msg.id else None
    if msg.ts_unix_ms < 0:
        raise _fail(f"{field}.ts_unix_ms", "must not be negative")
    return NewEvent(
        name=name(msg.name, f"{field}.name"),
        data_json=json_object(msg.data_json, f"{field}.data_json"),
        id=event_id,
        ts_ms=msg.ts_unix_ms or None,
    )


def events(
    msgs: Any, field: str, *, required: bool, lim: limits.Limits = limits.DEFAULT_LIMITS
) -> tuple[NewEvent, ...]:
    """A list of events, at least one when ``required``, at most ``lim.max_batch_events``."""
    if required and len(msgs) == 0:
        raise _fail(field, "at least one event is required")
    if len(msgs) > lim.max_batch_events:
        raise errors.LimitExceeded(
            f"{field}: {len(msgs)} events in one request, the limit (max_batch_events) is "
            f"{lim.max_batch_events}"
        )
    return tuple(event(m, f"{field}[{i}]", lim) for i, m in enumerate(msgs))


def send_event(req: pb.SendEventRequest, lim: limits.Limits = limits.DEFAULT_LIMITS) -> tuple[NewEvent, ...]:
    """SendEvent."""
    return events(req.events, "events", required=True, lim=lim)


def register_functions(req: pb.RegisterFunctionsRequest) -> tuple[str, tuple[FunctionSpec, ...]]:
    """RegisterFunctions."""
    app_id = name(req.app_id, "app_id")
    if len(req.functions) > limits.MAX_FUNCTIONS_PER_REQUEST:
        raise _fail("functions", f"at most {limits.MAX_FUNCTIONS_PER_REQUEST} functions per request")
    specs: list[FunctionSpec] = []
    seen: set[str] = set()
    for i, fn in enumerate(req.functions):
        field = f"functions[{i}]"
        fid = function_id(fn.function_id, f"{field}.function_id")
        if fid in seen:
            raise _fail(f"{field}.function_id", f"duplicate function id {fid!r}")
        seen.add(fid)
        if len(fn.triggers) == 0:
            raise _fail(f"{field}.triggers", "at least one trigger is required")
        if len(fn.triggers) > limits.MAX_TRIGGERS_PER_FUNCTION:
            raise _fail(f"{field}.triggers", f"at most {limits.MAX_TRIGGERS_PER_FUNCTION} triggers")
        triggers = tuple(
            dict.fromkeys(
                name(trig.event, f"{field}.triggers[{j}].event") for j, trig in enumerate(fn.triggers)
            )
        )
        retries = fn.retries if fn.HasField("retries") else limits.DEFAULT_RETRIES
        if not 0 <= retries <= limits.MAX_RETRIES:
            raise _fail(f"{field}.retries", f"must be between 0 and {limits.MAX_RETRIES}")
        specs.append(FunctionSpec(function_id=fid, triggers=triggers, retries=retries))
    return app_id, tuple(specs)


def poll_work(req: pb.PollWorkRequest) -> tuple[str, tuple[str, ...], str, int, int]:
    """PollWork: (app_id, function_ids, worker_id, max_items, max_wait_ms; 0 = the default)."""
    app_id = name(req.app_id, "app_id")
    function_ids = tuple(
        dict.fromkeys(function_id(f, f"function_ids[{i}]") for i, f in enumerate(req.function_ids))
    )
    worker_id = identifier(req.worker_id, "worker_id", max_chars=limits.MAX_NAME_CHARS)
    if not 0 <= req.max_items <= limits.MAX_POLL_ITEMS:
        raise _fail("max_items", f"must be between 0 and {limits.MAX_POLL_ITEMS}")
    if not 0 <= req.max_wait_ms <= limits.MAX_POLL_WAIT_MS:
        raise _fail("max_wait_ms", f"must be between 0 and {limits.MAX_POLL_WAIT_MS}")
    return app_id, function_ids, worker_id, req.max_items or 1, req.max_wait_ms


def _error_info(msg: pb.Error, field: str, present: bool) -> ErrorInfo:
    if not present:
        raise _fail(field, "required")
    cap = limits.MAX_ERROR_TEXT_CHARS
    if not msg.name:
        raise _fail(f"{field}.name", "required (the error's type name)")
    # Error texts come from user code: keep them, but bounded (the head of a stack is what matters).
    return ErrorInfo(name=_storable(msg.name[:cap]), message=_storable(msg.message[:cap]),
                     stack=_storable(msg.stack[:cap]))


def _storable(text: str) -> str:
    """Free text as every store can keep it: PostgreSQL's text type refuses NUL, so it becomes
    U+FFFD (the replacement character) on every store alike; anything else is kept."""
    return text.replace("\x00", "\ufffd")


def _retry_after(value: int, field: str) -> int:
    if value < 0:
        raise _fail(field, "must not be negative")
    return value


def _outcome(req: pb.CompleteStepRequest, lim: limits.Limits) -> Outcome:
    which = req.WhichOneof("outcome")
    if which is None:
        raise _fail(
            "outcome",
            "required: one of step_output, step_error, sleep, wait_for_event, send_events, "
            "run_completed, run_failed",
        )
    if which == "step_output":
        return StepOutput(
            json_value(req.step_output.output_json, "step_output.output_json", lim.max_output_bytes)
        )
    if which == "step_error":
        se = req.step_error
        return StepError(
            error=_error_info(se.error, "step_error.error", se.HasField("error")),
            retriable=se.retriable,
            retry_after_ms=_retry_after(se.retry_after_ms, "step_error.retry_after_ms"),
        )
    if which == "sleep":
        if req.sleep.until_unix_ms <= 0:
            raise _fail("sleep.until_unix_ms", "required (Unix ms, positive)")
        return Sleep(until_ms=req.sleep.until_unix_ms)
    if which == "wait_for_event":
        wait = req.wait_for_event
        if not matching.is_valid_path(wait.match) or len(wait.match) > limits.MAX_NAME_CHARS:
            raise _fail("wait_for_event.match", 'must be empty or a dotted path like "data.upload_id"')
        if wait.timeout_unix_ms <= 0:
            raise _fail("wait_for_event.timeout_unix_ms", "required (Unix ms, positive)")
        return WaitForEvent(
            event=name(wait.event, "wait_for_event.event"),
            match=wait.match,
            timeout_ms=wait.timeout_unix_ms,
        )
    if which == "send_events":
        return SendEvents(events(req.send_events.events, "send_events.events", required=False, lim=lim))
    if which == "run_completed":
        return RunCompleted(
            json_value(req.run_completed.output_json, "run_completed.output_json", lim.max_output_bytes)
        )
    rf = req.run_failed
    return RunFailed(
        error=_error_info(rf.error, "run_failed.error", rf.HasField("error")),
        retriable=rf.retriable,
        retry_after_ms=_retry_after(rf.retry_after_ms, "run_failed.retry_after_ms"),
    )


def complete_step(req: pb.CompleteStepRequest, lim: limits.Limits = limits.DEFAULT_LIMITS) -> Completion:
    """CompleteStep."""
    run_id = identifier(req.run_id, "run_id")
    lease_id = identifier(req.lease_id, "lease_id")
    outcome = _outcome(req, lim)
    step_id = ""
    if not isinstance(outcome, RunCompleted | RunFailed):
        step_id = identifier(req.step_id, "step_id", max_chars=limits.MAX_STEP_ID_CHARS)
    for field in ("started_unix_ms", "ended_unix_ms"):
        if getattr(req, field) < 0:
            raise _fail(field, "must not be negative")
    return Completion(
        run_id=run_id,
        lease_id=lease_id,
        step_id=step_id,
        outcome=outcome,
        started_ms=req.started_unix_ms,
        ended_ms=req.ended_unix_ms,
        max_steps=lim.max_steps_per_run,
    )


def lease(req: pb.ExtendLeaseRequest | pb.ReleaseWorkRequest) -> tuple[str, str]:
    """ExtendLease / ReleaseWork: (run_id, lease_id)."""
    return identifier(req.run_id, "run_id"), identifier(req.lease_id, "lease_id")


def run_id(req: pb.GetRunRequest | pb.CancelRunRequest) -> str:
    """GetRun / CancelRun."""
    return identifier(req.run_id, "run_id")


def list_runs(req: pb.ListRunsRequest) -> RunFilter:
    """ListRuns."""
    status: RunStatus | None = None
    if req.status != pb.RUN_STATUS_UNSPECIFIED:
        if req.status not in RUN_STATUSES:
            raise _fail("status", f"unknown run status {req.status}")
        status = RUN_STATUSES[req.status]
    if not 0 <= req.limit <= limits.MAX_LIST_LIMIT:
        raise _fail("limit", f"must be between 0 and {limits.MAX_LIST_LIMIT}")
    return RunFilter(
        app_id=name(req.app_id, "app_id") if req.app_id else "",
        function_id=function_id(req.function_id, "function_id") if req.function_id else "",
        status=status,
        event_id=identifier(req.event_id, "event_id") if req.event_id else "",
        limit=req.limit or limits.DEFAULT_LIST_LIMIT,
        include_steps=req.include_steps,
    )
