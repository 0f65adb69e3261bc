"""Step ids, memoized results and the determinism check for one execution of a run. No I/O.

A run is executed from the top each time it is handed out. Every step call goes through `Replay.reach`,
which gives the call its stable id (the user's id, `:N` for the Nth repeat), checks that the k-th step
reached is the k-th step recorded, and returns the recorded step when there is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._wire import STEP_KIND_NAMES, STEP_STATUS_NAMES, decode_json, event_from_json
from sdk_python.errors import NonDeterminismError
from sdk_python.records import StepKind, StepStatus


@dataclass(frozen=True)
class MemoStep:
    """A recorded step as handed to the worker."""

    id: str
    kind: StepKind | None
    status: StepStatus | None
    output_json: str
    attempts: int

    @classmethod
    def from_pb(cls, step: pb.MemoStep) -> MemoStep:
        """From the WorkItem's memo."""
        return cls(
            id=step.id,
            kind=STEP_KIND_NAMES.get(step.kind),
            status=STEP_STATUS_NAMES.get(step.status),
            output_json=step.output_json,
            attempts=step.attempts,
        )


@dataclass(frozen=True)
class Reached:
    """A step call as the replay resolved it: its full id, its position and its record, if any."""

    step_id: str
    kind: StepKind
    position: int
    memo: MemoStep | None

    @property
    def completed(self) -> bool:
        """True when the step already completed: its code must not run again."""
        return self.memo is not None and self.memo.status == "completed"

    def memoized_result(self) -> Any:
        """The completed step's result, decoded exactly as a CONTINUE reply would be."""
        assert self.memo is not None
        return decode_result(self.kind, self.memo.output_json)


def decode_result(kind: StepKind, output_json: str) -> Any:
    """A step's result from its JSON text: the value for `run`, None for `sleep`, an `Event` or None for
    `wait_for_event`, the list of event ids for `send_event`."""
    value = decode_json(output_json)
    if kind == "sleep":
        return None
    if kind == "wait_for_event":
        return event_from_json(value)
    if kind == "send_event":
        if isinstance(value, dict):
            value = value.get("ids", [])
        return [str(v) for v in value] if isinstance(value, list) else []
    return value


class StepIds:
    """Per-run counters that turn the ids users write into unique, replay-stable step ids: the first
    occurrence of "x" is "x", the next "x:1", then "x:2" (a step in a loop)."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def next(self, user_id: str) -> str:
        """The id for the next occurrence of `user_id`."""
        count = self._seen.get(user_id, 0)
        self._seen[user_id] = count + 1
        return user_id if count == 0 else f"{user_id}:{count}"


class Replay:
    """The memo of one execution and the cursor through it."""

    def __init__(self, steps: Iterable[MemoStep]) -> None:
        # The WorkItem lists steps in position order; indexing by list order (rather than trusting each
        # `position` value) keeps the check right even if positions were ever sparse.
        self._recorded = list(steps)
        self._by_id = {step.id: index for index, step in enumerate(self._recorded)}
        self._ids = StepIds()
        self._cursor = 0

    @classmethod
    def from_pb(cls, steps: Iterable[pb.MemoStep]) -> Replay:
        """From a WorkItem's steps."""
        return cls(MemoStep.from_pb(step) for step in steps)

    @property
    def reached_count(self) -> int:
        """How many steps this execution has reached so far."""
        return self._cursor

    def reach(self, user_id: str, kind: StepKind) -> Reached:
        """Resolves the next step call; `NonDeterminismError` when it is not the step recorded at this
        position (another id, or the same id made by another kind of call)."""
        if not user_id:
            raise ValueError("step id must be a non-empty string")
        step_id = self._ids.next(user_id)
        position = self._cursor
        self._cursor += 1
        recorded = self._recorded[position] if position < len(self._recorded) else None
        if recorded is None:
            if step_id in self._by_id:
                # Only possible when calls were reordered; the earlier mismatch check would have fired
                # unless the memo itself is odd. Refuse rather than run the step twice.
                raise NonDeterminismError(
                    expected="(no step)", found=step_id, position=position,
                    detail=f"{step_id!r} was recorded at position {self._by_id[step_id]}",
                )
            return Reached(step_id=step_id, kind=kind, position=position, memo=None)
        if recorded.id != step_id:
            raise NonDeterminismError(expected=recorded.id, found=step_id, position=position)
        if recorded.kind is not None and recorded.kind != kind:
            raise NonDeterminismError(
                expected=recorded.id, found=step_id, position=position,
                detail=f"recorded as a {recorded.kind} step, now called as {kind}",
            )
        return Reached(step_id=step_id, kind=kind, position=position, memo=recorded)

    def check_finished(self) -> None:
        """Called when the function returns: every recorded step must have been reached, else the code
        took another path than the one recorded."""
        if self._cursor < len(self._recorded):
            missed = self._recorded[self._cursor]
            raise NonDeterminismError(expected=missed.id, found="", position=self._cursor)
