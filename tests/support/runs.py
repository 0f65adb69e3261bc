"""Waiting on runs through the SDK client: the runs an event started, a status, a step's status."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tests.support.waiting import GiveUp, wait_until

# Typed loosely on purpose: these helpers take any `sdk_python.Client` and return its `Run` records.
Client = Any
Run = Any
StepRecord = Any

TERMINAL = ("completed", "failed", "cancelled")


def wait_for_runs(client: Client, event_id: str, count: int = 1, timeout: float = 60) -> list[Run]:
    """Waits until exactly `count` runs triggered by `event_id` exist and returns them."""

    def check() -> list[Run] | None:
        runs = client.list_runs(event_id=event_id)
        if len(runs) > count:
            raise GiveUp(f"expected {count} run(s) for event {event_id}, found {len(runs)}")
        return runs if len(runs) == count else None

    return wait_until(check, timeout=timeout, message=f"{count} run(s) for event {event_id}")


def wait_for_run(client: Client, event_id: str, timeout: float = 60) -> Run:
    """The one run triggered by `event_id`, once it exists."""
    return wait_for_runs(client, event_id, 1, timeout)[0]


def wait_for_status(client: Client, run_id: str, status: str | Iterable[str], timeout: float = 60) -> Run:
    """Waits until the run has `status` (or one of several) and returns it.

    Stops at once, describing the run, if it reaches another terminal status instead.
    """
    wanted = {status} if isinstance(status, str) else set(status)
    seen: list[Run] = []

    def check() -> Run | None:
        run = client.get_run(run_id)
        seen[:] = [run]
        if run.status in wanted:
            return run
        if run.status in TERMINAL:
            raise GiveUp(f"run ended {run.status} instead of {sorted(wanted)}: {describe(run)}")
        return None

    return wait_until(
        check,
        timeout=timeout,
        message=lambda: f"run {run_id} to be {sorted(wanted)}; last: {describe(seen[0]) if seen else '-'}",
    )


def wait_for_step(client: Client, run_id: str, step_id: str, status: str, timeout: float = 60) -> Run:
    """Waits until step `step_id` of the run has `status`; returns the run."""
    seen: list[Run] = []

    def check() -> Run | None:
        run = client.get_run(run_id)
        seen[:] = [run]
        found = [s for s in run.steps if s.id == step_id]
        if found and found[0].status == status:
            return run
        if run.status in TERMINAL:
            raise GiveUp(f"run ended before step {step_id} was {status}: {describe(run)}")
        return None

    return wait_until(
        check,
        timeout=timeout,
        message=lambda: f"step {step_id} to be {status}; last seen {describe(seen[0]) if seen else '-'}",
    )


def step(run: Run, step_id: str) -> StepRecord:
    """The run's step with this id; fails listing the steps there are when missing."""
    for record in run.steps:
        if record.id == step_id:
            return record
    raise AssertionError(f"run {run.id} has no step {step_id!r}: {[s.id for s in run.steps]}")


def describe(run: Run) -> str:
    """A one-line summary of a run for assertion messages."""
    steps = ", ".join(f"{s.id}={s.status}/{s.attempts}" for s in run.steps)
    return f"{run.id} {run.status} error={run.error!r} steps=[{steps}]"
