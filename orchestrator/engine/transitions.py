"""The run state machine: which scheduling-state changes are allowed, and why.

The store performs each change with a conditional update (``... WHERE state = <from>``) and checks
it here first, so an impossible change is a bug caught at the source, not a corrupted run.
"""

from __future__ import annotations

from typing import Final

from orchestrator.engine.model import RunState

ALLOWED: Final[dict[tuple[RunState, RunState], str]] = {
    (RunState.READY, RunState.LEASED): "claimed by a worker",
    (RunState.LEASED, RunState.LEASED): "lease extended, or step committed and the run continues",
    (RunState.LEASED, RunState.READY): "retry scheduled, sleeping, released or lease expired",
    (RunState.LEASED, RunState.PARKED): "waiting for an event",
    (RunState.LEASED, RunState.ENDED): "completed, failed or cancelled",
    (RunState.PARKED, RunState.READY): "wait resolved by an event or its timeout",
    (RunState.PARKED, RunState.ENDED): "cancelled while waiting",
    (RunState.READY, RunState.ENDED): "cancelled while ready or sleeping",
}


class IllegalTransition(AssertionError):
    """A state change the state machine forbids (a bug, never a user error)."""


def require(src: RunState, dst: RunState) -> str:
    """Returns why ``src -> dst`` happens, or raises IllegalTransition."""
    reason = ALLOWED.get((src, dst))
    if reason is None:
        raise IllegalTransition(f"run state {src} -> {dst} is not allowed")
    return reason


def can_cancel(state: RunState) -> bool:
    """Whether a run in this state can be cancelled."""
    return (state, RunState.ENDED) in ALLOWED
