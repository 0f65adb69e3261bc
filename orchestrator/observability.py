"""Turns what the service did into spans and metrics, after the fact and off the request's path.

The service calls these hooks once a store call has committed; each hook schedules its work as a
background task (reading the run back when it needs more than the request carried) so that an RPC
never waits for telemetry. With tracing and metrics both off, every hook returns at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from opentelemetry.trace import Link

from orchestrator import metrics, tracing
from orchestrator.engine.model import (
    STEP_OUTCOME_KINDS,
    Completion,
    CompletionResult,
    Directive,
    IngestResult,
    NewEvent,
    RunCompleted,
    RunFailed,
    RunStatus,
    RunView,
    SendEvents,
    Sleep,
    StepAttempt,
    StepError,
    StepKind,
    StepStatus,
    StepView,
    WaitForEvent,
    WorkItem,
)

logger = logging.getLogger("orchestrator.observability")

GetRun = Callable[[str], Awaitable[RunView]]
# Run ids whose function id is remembered from their work items, so step metrics need no read.
FUNCTION_CACHE_SIZE = 10_000


class Observer:
    """Hooks of the service for traces and metrics."""

    def __init__(self, tracer: tracing.Tracer, meters: metrics.Metrics, get_run: GetRun) -> None:
        self.tracer = tracer
        self.metrics = meters
        self._get_run = get_run
        self._tasks: set[asyncio.Task[None]] = set()
        self._functions: OrderedDict[str, str] = OrderedDict()
        # Sleeps and waits already emitted by this process: a run handed out again after its lease
        # expired still has the same last step, which must not make a second span.
        self._suspensions: OrderedDict[tuple[str, str], None] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """True when traces or metrics are exported."""
        return self.tracer.enabled or self.metrics.enabled

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(self._guard(work), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _guard(work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception:  # telemetry never fails the orchestrator: log and go on
            logger.warning("telemetry hook failed", exc_info=True)

    def _remember(self, run_id: str, function_id: str) -> None:
        self._functions[run_id] = function_id
        self._functions.move_to_end(run_id)
        while len(self._functions) > FUNCTION_CACHE_SIZE:
            self._functions.popitem(last=False)

    # -- hooks -------------------------------------------------------------------------------------

    def events_ingested(
        self, events: Sequence[NewEvent], result: IngestResult, *, start_ns: int, end_ns: int
    ) -> None:
        """After SendEvent committed."""
        if not self.enabled:
            return
        named = list(zip(result.ids, (e.name for e in events), strict=False))
        self.tracer.events_sent(named, result.run_ids, start_ns=start_ns, end_ns=end_ns)
        if self.metrics.enabled and result.run_ids:
            self._spawn(self._count_started(result.run_ids), "observe-runs-started")

    async def _count_started(self, run_ids: Sequence[str]) -> None:
        for run_id in run_ids:
            view = await self._get_run(run_id)
            self._remember(run_id, view.function_id)
            self.metrics.run_started(view.function_id)

    def work_claimed(self, items: Sequence[WorkItem]) -> None:
        """After PollWork leased ``items``: a sleep or wait that was the run's last step has ended."""
        if not self.enabled:
            return
        for item in items:
            self._remember(item.run_id, item.function_id)
            last = item.steps[-1] if item.steps else None
            suspended = last is not None and last.kind in (StepKind.SLEEP, StepKind.WAIT_FOR_EVENT)
            if self.tracer.enabled and suspended and last is not None and last.status == StepStatus.COMPLETED:
                self._spawn(self._suspension_ended(item.run_id, last.id), "observe-suspension")

    async def _suspension_ended(self, run_id: str, step_id: str) -> None:
        if (run_id, step_id) in self._suspensions:
            return
        view = await self._get_run(run_id)
        for step in view.steps:
            if step.id == step_id:
                self._emit_suspension(run_id, step)

    def _emit_suspension(self, run_id: str, step: StepView) -> None:
        key = (run_id, step.id)
        if key in self._suspensions:
            return
        self._suspensions[key] = None
        while len(self._suspensions) > FUNCTION_CACHE_SIZE:
            self._suspensions.popitem(last=False)
        self.tracer.suspension_ended(run_id, step)

    def step_completed(
        self, completion: Completion, result: CompletionResult, trace: tracing.StepTrace | None
    ) -> None:
        """After CompleteStep committed."""
        if not self.enabled:
            return
        self._spawn(self._step_completed(completion, result, trace), "observe-completion")

    async def _step_completed(
        self, c: Completion, result: CompletionResult, trace: tracing.StepTrace | None
    ) -> None:
        outcome = c.outcome
        kind = STEP_OUTCOME_KINDS.get(type(outcome))
        may_have_ended = isinstance(outcome, RunCompleted | RunFailed | StepError)
        may_have_ended = may_have_ended and result.directive == Directive.STOP
        resumed_at_once = isinstance(outcome, Sleep | WaitForEvent) and result.directive == Directive.CONTINUE
        attempted = kind in (StepKind.RUN, StepKind.SEND_EVENT)
        function_id = self._functions.get(c.run_id)
        known = trace is not None and trace.attempt is not None and function_id is not None
        view: RunView | None = None
        if may_have_ended or resumed_at_once or (attempted and not known):
            view = await self._get_run(c.run_id)
            function_id = view.function_id
        if attempted and kind is not None:
            attempt = self._attempt(c, trace, view)
            links = self._sent_events(c, view, attempt)
            if attempt is not None:
                self.tracer.step_attempt(c.run_id, c.step_id, kind, attempt, trace, links)
                seconds = (attempt.ended_ms - attempt.started_ms) / 1000
                if trace is not None and trace.started_ns and trace.ended_ns:
                    seconds = (trace.ended_ns - trace.started_ns) / 1e9
                self.metrics.step_attempt(function_id or "", str(kind), attempt.failed, seconds)
        if view is None:
            return
        if resumed_at_once:
            for step in view.steps:
                if step.id == c.step_id:
                    self._emit_suspension(c.run_id, step)
        if may_have_ended:
            self.run_ended(view)

    def _sent_events(
        self, c: Completion, view: RunView | None, attempt: StepAttempt | None
    ) -> list[Link]:
        # step.send_event: the events get their spans (a wait they resume links to them), and the
        # step's span links to those. Their ids are the step's recorded output.
        if not isinstance(c.outcome, SendEvents) or view is None or attempt is None:
            return []
        step = next((s for s in view.steps if s.id == c.step_id), None)
        ids = json.loads(step.output_json) if step is not None and step.output_json else []
        if not isinstance(ids, list):
            return []
        named = [(str(i), e.name) for i, e in zip(ids, c.outcome.events, strict=False)]
        at_ns = tracing.ms_to_ns(attempt.ended_ms)
        return self.tracer.event_spans(named, start_ns=at_ns, end_ns=at_ns)

    @staticmethod
    def _attempt(
        c: Completion, trace: tracing.StepTrace | None, view: RunView | None
    ) -> StepAttempt | None:
        if trace is not None and trace.attempt is not None:
            error = c.outcome.error if isinstance(c.outcome, StepError) else None
            return StepAttempt(trace.attempt, c.started_ms, c.ended_ms, error is not None, error)
        if view is None:
            return None
        for step in view.steps:
            if step.id == c.step_id and step.history:
                return step.history[-1]
        return None

    def run_ended(self, view: RunView) -> None:
        """A run ended (completed, failed or cancelled); a run still going is ignored."""
        if view.status == RunStatus.RUNNING:
            return
        self.tracer.run_ended(view)
        self.metrics.run_ended(view.function_id, view.status)
        self._functions.pop(view.id, None)

    def run_read(self, run_id: str, *, start_ns: int, end_ns: int) -> None:
        """After GetRun: its span links to the run."""
        if self.tracer.enabled:
            links = [Link(tracing.run_context(run_id))]
            self.tracer.rpc("GetRun", links, start_ns=start_ns, end_ns=end_ns)

    def leases_expired(self, count: int) -> None:
        """The scheduler expired ``count`` leases."""
        self.metrics.leases_expired(count)

    async def close(self) -> None:
        """Finishes pending hooks, then exports what is queued (off the event loop: it blocks)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.tracer.shutdown)
        await loop.run_in_executor(None, self.metrics.shutdown)


def now_ns() -> int:
    """Wall-clock Unix ns, for span times."""
    return time.time_ns()
