"""Domain records to proto messages."""

from __future__ import annotations

from orchestrator import tracing
from orchestrator.engine.model import (
    ErrorInfo,
    EventRecord,
    MemoStep,
    RunStatus,
    RunView,
    StepAttempt,
    StepKind,
    StepStatus,
    StepView,
    WorkItem,
)
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb

STEP_KINDS: dict[StepKind, pb.StepKind] = {
    StepKind.RUN: pb.STEP_KIND_RUN,
    StepKind.SLEEP: pb.STEP_KIND_SLEEP,
    StepKind.WAIT_FOR_EVENT: pb.STEP_KIND_WAIT_FOR_EVENT,
    StepKind.SEND_EVENT: pb.STEP_KIND_SEND_EVENT,
}

STEP_STATUSES: dict[StepStatus, pb.StepStatus] = {
    StepStatus.RUNNING: pb.STEP_STATUS_RUNNING,
    StepStatus.COMPLETED: pb.STEP_STATUS_COMPLETED,
    StepStatus.FAILED: pb.STEP_STATUS_FAILED,
    StepStatus.WAITING: pb.STEP_STATUS_WAITING,
    StepStatus.SLEEPING: pb.STEP_STATUS_SLEEPING,
}

RUN_STATUSES: dict[RunStatus, pb.RunStatus] = {
    RunStatus.RUNNING: pb.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: pb.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: pb.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: pb.RUN_STATUS_CANCELLED,
}


def event(record: EventRecord) -> pb.Event:
    """An ingested event."""
    return pb.Event(id=record.id, name=record.name, data_json=record.data_json, ts_unix_ms=record.ts_ms)


def error(info: ErrorInfo | None) -> pb.Error | None:
    """An error, or None."""
    if info is None:
        return None
    return pb.Error(name=info.name, message=info.message, stack=info.stack)


def memo_step(step: MemoStep) -> pb.MemoStep:
    """A step of a work item."""
    return pb.MemoStep(
        id=step.id,
        kind=STEP_KINDS[step.kind],
        status=STEP_STATUSES[step.status],
        output_json=step.output_json,
        attempts=step.attempts,
        position=step.position,
    )


def work_item(item: WorkItem) -> pb.WorkItem:
    """A leased work item."""
    return pb.WorkItem(
        run_id=item.run_id,
        app_id=item.app_id,
        function_id=item.function_id,
        event=event(item.event),
        steps=[memo_step(s) for s in item.steps],
        attempt=item.attempt,
        lease_id=item.lease_id,
        lease_expires_unix_ms=item.lease_expires_ms,
        traceparent=tracing.traceparent(item.run_id),
        lost_attempts=item.lost_attempts,
    )


def step_attempt(attempt: StepAttempt) -> pb.StepAttempt:
    """One attempt in a step's history."""
    return pb.StepAttempt(
        attempt=attempt.attempt,
        started_unix_ms=attempt.started_ms,
        ended_unix_ms=attempt.ended_ms,
        failed=attempt.failed,
        error=error(attempt.error),
    )


def step_info(step: StepView) -> pb.StepInfo:
    """A step in a run's history."""
    return pb.StepInfo(
        id=step.id,
        kind=STEP_KINDS[step.kind],
        status=STEP_STATUSES[step.status],
        attempts=step.attempts,
        output_json=step.output_json,
        error=error(step.error),
        started_unix_ms=step.started_ms,
        ended_unix_ms=step.ended_ms,
        wake_unix_ms=step.wake_ms,
        wait_event=step.wait_event,
        wait_match=step.wait_match,
        resumed_by_event_id=step.resumed_by_event_id,
        position=step.position,
        attempt_history=[step_attempt(a) for a in step.history],
    )


def run(view: RunView) -> pb.Run:
    """A run."""
    return pb.Run(
        id=view.id,
        app_id=view.app_id,
        function_id=view.function_id,
        event_id=view.event_id,
        status=RUN_STATUSES[view.status],
        output_json=view.output_json,
        error=error(view.error),
        created_unix_ms=view.created_ms,
        ended_unix_ms=view.ended_ms,
        steps=[step_info(s) for s in view.steps],
        event=event(view.event),
    )
