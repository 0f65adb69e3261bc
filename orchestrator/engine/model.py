"""The domain model: statuses, records and the outcomes a worker reports.

Instants are Unix ms (see ``orchestrator.clock``); JSON payloads are kept as JSON text, exactly as
they travel on the wire and sit in the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from orchestrator.engine import limits


class RunStatus(StrEnum):
    """The public status of a run."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunState(StrEnum):
    """The internal scheduling state of a run (the public status is ``running`` for all but ENDED)."""

    READY = "ready"  # can be claimed once available_at has passed (also: sleeping, retry backoff)
    LEASED = "leased"  # handed to a worker under a lease
    PARKED = "parked"  # waiting for an event (a wait row holds the timeout)
    ENDED = "ended"  # completed, failed or cancelled


class StepKind(StrEnum):
    """Which SDK call made a step."""

    RUN = "run"
    SLEEP = "sleep"
    WAIT_FOR_EVENT = "wait_for_event"
    SEND_EVENT = "send_event"


class StepStatus(StrEnum):
    """The status of a recorded step."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING = "waiting"
    SLEEPING = "sleeping"


class WaitStatus(StrEnum):
    """The status of a wait row; only WAITING is open."""

    WAITING = "waiting"
    MATCHED = "matched"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class Directive(StrEnum):
    """What the worker does after a completion."""

    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class ErrorInfo:
    """An error as shown to people."""

    name: str
    message: str
    stack: str = ""


@dataclass(frozen=True)
class NewEvent:
    """An event as sent, before ingestion. ``data_json`` is validated JSON object text."""

    name: str
    data_json: str = "{}"
    id: str | None = None
    ts_ms: int | None = None


@dataclass(frozen=True)
class EventRecord:
    """An ingested event. ``seq`` orders events by ingestion."""

    seq: int
    id: str
    name: str
    data_json: str
    ts_ms: int


@dataclass(frozen=True)
class FunctionSpec:
    """A function's registration."""

    function_id: str
    triggers: tuple[str, ...]
    retries: int = 4


@dataclass(frozen=True)
class MemoStep:
    """A recorded step as handed to a worker."""

    id: str
    kind: StepKind
    status: StepStatus
    output_json: str
    attempts: int  # failed attempts so far
    position: int


@dataclass(frozen=True)
class WorkItem:
    """A run leased to a worker, with everything needed to execute it from the top."""

    run_id: str
    app_id: str
    function_id: str
    event: EventRecord
    steps: tuple[MemoStep, ...]
    attempt: int
    lease_id: str
    lease_expires_ms: int
    # Attempts lost with their workers since the run's last outcome: its next outcome is charged
    # with them (see ``orchestrator.store.lost``), so the worker numbers its first attempt after them.
    lost_attempts: int = 0


@dataclass(frozen=True)
class StepAttempt:
    """One attempt of a step, for history."""

    attempt: int
    started_ms: int
    ended_ms: int
    failed: bool
    error: ErrorInfo | None


@dataclass(frozen=True)
class StepView:
    """A step in a run's history."""

    id: str
    kind: StepKind
    status: StepStatus
    attempts: int  # attempts made (1 for a step that succeeded at once)
    output_json: str
    error: ErrorInfo | None
    started_ms: int
    ended_ms: int
    wake_ms: int
    wait_event: str
    wait_match: str
    resumed_by_event_id: str
    position: int
    history: tuple[StepAttempt, ...] = ()


@dataclass(frozen=True)
class RunView:
    """A run as shown to people and tools."""

    id: str
    app_id: str
    function_id: str
    event_id: str
    status: RunStatus
    output_json: str
    error: ErrorInfo | None
    created_ms: int
    ended_ms: int
    event: EventRecord
    steps: tuple[StepView, ...] = ()


@dataclass(frozen=True)
class RunFilter:
    """ListRuns filters; empty strings and None mean "all"."""

    app_id: str = ""
    function_id: str = ""
    status: RunStatus | None = None
    event_id: str = ""
    limit: int = 100
    include_steps: bool = False


# Outcomes a worker reports with CompleteStep.


@dataclass(frozen=True)
class StepOutput:
    """A step.run returned; ``output_json`` is canonical JSON text."""

    output_json: str


@dataclass(frozen=True)
class StepError:
    """A step.run raised."""

    error: ErrorInfo
    retriable: bool
    retry_after_ms: int = 0


@dataclass(frozen=True)
class Sleep:
    """step.sleep / step.sleep_until."""

    until_ms: int


@dataclass(frozen=True)
class WaitForEvent:
    """step.wait_for_event; ``match`` is a dotted path or empty."""

    event: str
    match: str
    timeout_ms: int


@dataclass(frozen=True)
class SendEvents:
    """step.send_event."""

    events: tuple[NewEvent, ...]


@dataclass(frozen=True)
class RunCompleted:
    """The function returned; ``output_json`` is canonical JSON text."""

    output_json: str


@dataclass(frozen=True)
class RunFailed:
    """The function raised outside any step."""

    error: ErrorInfo
    retriable: bool
    retry_after_ms: int = 0


Outcome = StepOutput | StepError | Sleep | WaitForEvent | SendEvents | RunCompleted | RunFailed

STEP_OUTCOME_KINDS: dict[type[Outcome], StepKind] = {
    StepOutput: StepKind.RUN,
    StepError: StepKind.RUN,
    Sleep: StepKind.SLEEP,
    WaitForEvent: StepKind.WAIT_FOR_EVENT,
    SendEvents: StepKind.SEND_EVENT,
}


@dataclass(frozen=True)
class Completion:
    """A CompleteStep request, validated."""

    run_id: str
    lease_id: str
    step_id: str
    outcome: Outcome
    started_ms: int = 0
    ended_ms: int = 0
    # The operator's steps-per-run limit, carried with the request so the store enforces it atomically.
    max_steps: int = limits.MAX_STEPS_PER_RUN


@dataclass(frozen=True)
class Wakeups:
    """What a write made newly possible: apps whose pollers should look for work now, and the
    nearest new timer deadline (Unix ms) the scheduler must not sleep past."""

    ready_apps: frozenset[str] = frozenset()
    deadline_ms: int | None = None

    def merge(self, other: Wakeups) -> Wakeups:
        """Both sets of wake-ups."""
        deadlines = [d for d in (self.deadline_ms, other.deadline_ms) if d is not None]
        return Wakeups(self.ready_apps | other.ready_apps, min(deadlines) if deadlines else None)


@dataclass(frozen=True)
class SuspensionEnded:
    """A sleep or a wait that a transaction ended: reported in its result so that the span of the
    suspension is emitted once, after that commit, and by no other transaction."""

    run_id: str
    step_id: str


@dataclass(frozen=True)
class LostAttempts:
    """Attempts of a step lost with their workers that a transaction recorded in the step's history
    (numbered ``first_attempt`` on, dated ``at_ms``): reported so that their spans are emitted."""

    run_id: str
    step_id: str
    first_attempt: int
    count: int
    at_ms: int
    error: ErrorInfo


def ready_apps(result: object) -> frozenset[str]:
    """The apps whose work a store call's result (any result with ``wakeups``, or ``Wakeups``
    itself) says it made ready."""
    wakeups = result if isinstance(result, Wakeups) else getattr(result, "wakeups", None)
    return wakeups.ready_apps if isinstance(wakeups, Wakeups) else frozenset()


@dataclass(frozen=True)
class IngestResult:
    """The result of SendEvent."""

    ids: tuple[str, ...]
    run_ids: tuple[str, ...]
    wakeups: Wakeups = field(default_factory=Wakeups)
    # The waits the events resumed (a list the store may fill after its next round trip, before
    # the commit is reported: ``store.ingest``).
    ended: Sequence[SuspensionEnded] = ()


@dataclass(frozen=True)
class CompletionResult:
    """The reply to CompleteStep."""

    directive: Directive
    output_json: str = ""
    lease_expires_ms: int = 0
    wakeups: Wakeups = field(default_factory=Wakeups)
    # What the completion recorded, for telemetry: the attempt of a step.run or send_event (None for
    # a repeated completion, which records nothing), the attempts lost with their workers that it
    # charged to the step, the suspensions it ended (its own sleep or wait over at once, or waits of
    # other runs that the events of a send_event resumed), and whether it ended the run.
    attempt: StepAttempt | None = None
    lost: tuple[LostAttempts, ...] = ()
    ended: Sequence[SuspensionEnded] = ()  # with a send_event step: as ``IngestResult.ended``
    run_ended: bool = False


@dataclass(frozen=True)
class ClaimResult:
    """Work leased by PollWork."""

    items: tuple[WorkItem, ...]
    wakeups: Wakeups = field(default_factory=Wakeups)
    # The sleeps that had elapsed and that the claim completed.
    ended: tuple[SuspensionEnded, ...] = ()


@dataclass(frozen=True)
class TimerResult:
    """What the scheduler's pass did."""

    timed_out_waits: int = 0
    expired_leases: int = 0
    wakeups: Wakeups = field(default_factory=Wakeups)
    # The waits that timed out, the runs that failed because lost attempts used up their retries,
    # and the lost attempts recorded on those runs' retrying steps.
    ended: tuple[SuspensionEnded, ...] = ()
    failed_runs: tuple[str, ...] = ()
    lost: tuple[LostAttempts, ...] = ()
