"""Domain records the SDK hands to user code: events, runs, steps and errors.

They are frozen dataclasses with JSON payloads already decoded and instants as timezone-aware UTC
datetimes. Conversions from and to the wire live in `sdk_python._wire`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "ErrorInfo",
    "Event",
    "Run",
    "RunStatus",
    "StepAttemptRecord",
    "StepKind",
    "StepRecord",
    "StepStatus",
]

RunStatus = Literal["running", "completed", "failed", "cancelled"]
"""A run's public status; `running` also while it sleeps or waits."""

StepStatus = Literal["running", "completed", "failed", "waiting", "sleeping"]
"""A step's status; `waiting` for a wait_for_event that waits, `sleeping` for a sleep not yet over."""

StepKind = Literal["run", "sleep", "wait_for_event", "send_event"]
"""Which step call made a step."""

RUN_STATUSES: tuple[RunStatus, ...] = ("running", "completed", "failed", "cancelled")


@dataclass(frozen=True)
class Event:
    """An event: something that happened. `data` must be a JSON-serialisable dict.

    `id` and `ts` (milliseconds since the Unix epoch, UTC) may be left `None` when sending: the SDK
    fills them in before the first attempt, so a send retried after a lost reply is not ingested twice.
    """

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None
    ts: int | None = None


@dataclass(frozen=True)
class ErrorInfo:
    """An error as recorded on a step or a run: its type name, message and stack trace."""

    name: str
    message: str
    stack: str = ""


@dataclass(frozen=True)
class StepRecord:
    """A step in a run's history. `id` is the id the user wrote, with `:N` for its Nth repeat."""

    id: str
    kind: StepKind
    status: StepStatus
    attempts: int
    output: Any = None
    error: ErrorInfo | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    # For a sleep: when it ends; for a wait_for_event: its timeout.
    wake_at: datetime | None = None
    position: int = 0
    # For a wait_for_event: the awaited event name, match path and the event that resumed it.
    wait_event: str | None = None
    wait_match: str | None = None
    resumed_by_event_id: str | None = None
    # Every attempt, in order (one for a step that succeeded at once, a sleep, a wait or a send).
    history: list[StepAttemptRecord] = field(default_factory=list)


@dataclass(frozen=True)
class StepAttemptRecord:
    """One attempt of a step: when it ran and, if it failed, why. `attempt` counts from 0."""

    attempt: int
    started_at: datetime | None
    ended_at: datetime | None
    failed: bool
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class Run:
    """A run of a function for one triggering event, with its steps in execution order."""

    id: str
    app_id: str
    function_id: str
    event_id: str
    status: RunStatus
    output: Any
    error: ErrorInfo | None
    steps: list[StepRecord]
    created_at: datetime
    ended_at: datetime | None
    event: Event
