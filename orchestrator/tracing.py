"""OpenTelemetry traces of runs: one trace per run, emitted by the orchestrator as each span ends.

A run lasts as long as it likes, crosses restarts and replicas, and executes on several workers, so
no process can hold its spans open. Instead every id is derived from durable data: the trace id from
the run id, the root span id from the run id, a step attempt's span id from (run, step, attempt)
with the function the worker SDK uses too (``sdk_python._tracing.step_span_id``; a worker may
instead report the id it chose), an event's span context from the event id. Each span is then built
whole, with its original start time, when the thing it describes ends, and handed to a
``BatchSpanProcessor``: exporting happens on the processor's thread, never in a store thread or a
transaction.

Span names and attributes (also listed in the README):

- ``run <function_id>`` (root, INTERNAL): ``durable.run.id``, ``durable.app.id``,
  ``durable.function.id``, ``durable.event.id``, ``durable.event.name``, ``durable.run.status``;
  linked to the triggering event's span.
- ``step <step_id>`` (child of the root): ``durable.step.id``, ``durable.step.kind``,
  ``durable.step.attempt``, ``durable.step.status`` (``completed``, ``failed``, or ``lost`` for an
  attempt lost with its worker); a failed or lost attempt has status ERROR, ``error.type`` and an
  ``exception`` event (``exception.type``, ``exception.message``).
- ``sleep <step_id>`` / ``wait <step_id>``: ``durable.sleep.until_ms`` or ``durable.wait.event``,
  ``durable.wait.match``, ``durable.wait.timeout_ms``, ``durable.wait.resumed_by`` (an event id or
  ``timed out``); a resumed wait links to the resuming event's span.
- ``event <name>`` (PRODUCER, root of its own trace): ``durable.event.id``, ``durable.event.name``.
- ``durable.v1.Orchestrator/SendEvent`` (SERVER, RPC semantic conventions): links to the spans of
  the events it ingested and to the root spans of the runs they started; ``.../GetRun`` links to
  the run it read. No run id attribute: only spans inside a run's trace carry one.

Configuration is the standard OpenTelemetry environment; with none, ``from_env`` returns a tracer
whose methods return at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from orchestrator.engine.model import (
    ErrorInfo,
    LostAttempts,
    RunStatus,
    RunView,
    StepAttempt,
    StepKind,
    StepView,
)
from sdk_python import _tracing as sdk_tracing

logger = logging.getLogger("orchestrator.tracing")

SCOPE = InstrumentationScope("orchestrator")
SAMPLED = TraceFlags(TraceFlags.SAMPLED)
TIMED_OUT = "timed out"
SEND_EVENT_SPAN = "durable.v1.Orchestrator/SendEvent"

# Attribute names, in one place so the README, the code and the tests agree.
RUN_ID = "durable.run.id"
APP_ID = "durable.app.id"
FUNCTION_ID = "durable.function.id"
EVENT_ID = "durable.event.id"
EVENT_NAME = "durable.event.name"
RUN_STATUS = "durable.run.status"
STEP_ID = "durable.step.id"
STEP_KIND = "durable.step.kind"
STEP_ATTEMPT = "durable.step.attempt"
STEP_STATUS = "durable.step.status"
SLEEP_UNTIL = "durable.sleep.until_ms"
WAIT_EVENT = "durable.wait.event"
WAIT_MATCH = "durable.wait.match"
WAIT_TIMEOUT = "durable.wait.timeout_ms"
WAIT_RESUMED_BY = "durable.wait.resumed_by"
LOST = "lost"  # the durable.step.status of an attempt lost with its worker


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x00".join(parts).encode()).digest()


def _nonzero(value: int) -> int:
    # The all-zero id is invalid in W3C trace context; a hash hitting it is astronomically unlikely
    # but must still give a valid id.
    return value or 1


def run_trace_id(run_id: str) -> int:
    """The run's trace id: the run id's 128 bits when it is a uuid, else a hash of it."""
    try:
        return _nonzero(uuid.UUID(run_id).int)
    except ValueError:
        return _nonzero(int.from_bytes(_digest("trace", run_id)[:16], "big"))


def span_id(*parts: str) -> int:
    """A span id derived from ``parts`` (stable across processes and restarts)."""
    return _nonzero(int.from_bytes(_digest("span", *parts)[:8], "big"))


def run_context(run_id: str) -> SpanContext:
    """The span context of the run's root span."""
    return SpanContext(run_trace_id(run_id), span_id("run", run_id), is_remote=True, trace_flags=SAMPLED)


def event_context(event_id: str) -> SpanContext:
    """The span context of an ingested event's span (the root of its own trace)."""
    trace_id = _nonzero(int.from_bytes(_digest("event-trace", event_id)[:16], "big"))
    return SpanContext(trace_id, span_id("event", event_id), is_remote=True, trace_flags=SAMPLED)


def traceparent(run_id: str) -> str:
    """The W3C ``traceparent`` of the run's root span, handed to workers with each work item."""
    ctx = run_context(run_id)
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"


def ms_to_ns(ms: int) -> int:
    """Unix ms to Unix ns."""
    return ms * 1_000_000


def step_context(run_id: str, step_id: str, attempt: int) -> SpanContext:
    """The span context of a step attempt's span (unless its worker chose another id)."""
    trace_id = run_trace_id(run_id)
    sid = sdk_tracing.step_span_id(run_id, step_id, attempt)
    return SpanContext(trace_id, sid, is_remote=False, trace_flags=SAMPLED)


@dataclass(frozen=True)
class StepTrace:
    """What a worker reported about the span of the step attempt it executed (all optional)."""

    span_id: int = 0
    attempt: int | None = None
    started_ns: int = 0
    ended_ns: int = 0


def parse_span_id(text: str) -> int:
    """A span id from 16 hex digits; 0 when empty or malformed (the orchestrator then derives one)."""
    if len(text) != 16:
        return 0
    try:
        return int(text, 16)
    except ValueError:
        return 0


def _exception_event(error: ErrorInfo, at_ns: int) -> Event:
    attributes: dict[str, AttributeValue] = {"exception.type": error.name, "exception.message": error.message}
    if error.stack:
        attributes["exception.stacktrace"] = error.stack
    return Event("exception", attributes, timestamp=at_ns)


class Tracer:
    """Builds the spans of runs and hands them to a span processor. Without one, does nothing."""

    def __init__(self, processor: SpanProcessor | None, resource: Resource | None = None) -> None:
        self._processor = processor
        self._resource = resource or Resource.create({})

    @property
    def enabled(self) -> bool:
        """True when spans are exported."""
        return self._processor is not None

    def _emit(
        self,
        name: str,
        context: SpanContext,
        *,
        parent: SpanContext | None,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, AttributeValue],
        kind: SpanKind = SpanKind.INTERNAL,
        events: Sequence[Event] = (),
        links: Sequence[Link] = (),
        error: str | None = None,
    ) -> None:
        if self._processor is None:
            return
        status = Status(StatusCode.ERROR, error) if error is not None else Status(StatusCode.UNSET)
        span = ReadableSpan(
            name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=dict(attributes),
            events=events,
            links=links,
            kind=kind,
            status=status,
            start_time=start_ns,
            end_time=max(end_ns, start_ns),
            instrumentation_scope=SCOPE,
        )
        self._processor.on_end(span)

    # -- spans inside a run's trace ----------------------------------------------------------------

    def run_ended(self, view: RunView) -> None:
        """The run's root span, emitted once the run has ended."""
        if self._processor is None or view.status == RunStatus.RUNNING:
            return
        end_ns = ms_to_ns(view.ended_ms or view.created_ms)
        attributes: dict[str, AttributeValue] = {
            RUN_ID: view.id,
            APP_ID: view.app_id,
            FUNCTION_ID: view.function_id,
            EVENT_ID: view.event_id,
            EVENT_NAME: view.event.name,
            RUN_STATUS: str(view.status),
        }
        events = [_exception_event(view.error, end_ns)] if view.error is not None else []
        if view.error is not None:
            attributes["error.type"] = view.error.name
        error = None
        if view.status == RunStatus.FAILED:
            error = view.error.message if view.error is not None else "failed"
        elif view.status == RunStatus.CANCELLED:
            error = "cancelled"
        self._emit(
            f"run {view.function_id}",
            run_context(view.id),
            parent=None,
            start_ns=ms_to_ns(view.created_ms),
            end_ns=end_ns,
            attributes=attributes,
            events=events,
            links=[Link(event_context(view.event_id), {EVENT_NAME: view.event.name})],
            error=error,
        )

    def step_attempt(
        self,
        run_id: str,
        step_id: str,
        kind: StepKind,
        attempt: StepAttempt,
        trace: StepTrace | None = None,
        links: Sequence[Link] = (),
        *,
        status: str | None = None,
    ) -> None:
        """The span of one attempt of a step.run (or of a send_event), a child of the run's root.
        ``status`` overrides the ``durable.step.status`` the attempt's outcome gives."""
        if self._processor is None:
            return
        trace = trace or StepTrace()
        root = run_context(run_id)
        context = step_context(run_id, step_id, attempt.attempt)
        if trace.span_id:
            context = SpanContext(root.trace_id, trace.span_id, is_remote=False, trace_flags=SAMPLED)
        start_ns = trace.started_ns or ms_to_ns(attempt.started_ms)
        end_ns = trace.ended_ns or ms_to_ns(attempt.ended_ms)
        attributes: dict[str, AttributeValue] = {
            RUN_ID: run_id,
            STEP_ID: step_id,
            STEP_KIND: str(kind),
            STEP_ATTEMPT: attempt.attempt,
            STEP_STATUS: status or ("failed" if attempt.failed else "completed"),
        }
        events: list[Event] = []
        error = None
        if attempt.failed:
            info = attempt.error or ErrorInfo(name="Error", message="failed")
            attributes["error.type"] = info.name
            events.append(_exception_event(info, end_ns))
            error = f"{info.name}: {info.message}"
        self._emit(
            f"step {step_id}",
            context,
            parent=root,
            start_ns=start_ns,
            end_ns=end_ns,
            attributes=attributes,
            events=events,
            links=links,
            error=error,
        )

    def attempts_lost(self, lost: LostAttempts) -> None:
        """The spans of step attempts lost with their workers, under the ids the workers derived for
        them: status ``lost`` and an ``exception`` event with the recorded error. Dated when the loss
        was recorded: no worker reported when they began or ended."""
        for number in range(lost.first_attempt, lost.first_attempt + lost.count):
            attempt = StepAttempt(number, lost.at_ms, lost.at_ms, True, lost.error)
            self.step_attempt(lost.run_id, lost.step_id, StepKind.RUN, attempt, status=LOST)

    def suspension_ended(self, run_id: str, step: StepView) -> None:
        """The span of a sleep or a wait that has ended, a child of the run's root; a wait resumed
        by an event links to that event's span."""
        if self._processor is None or step.kind not in (StepKind.SLEEP, StepKind.WAIT_FOR_EVENT):
            return
        root = run_context(run_id)
        attributes: dict[str, AttributeValue] = {RUN_ID: run_id, STEP_ID: step.id, STEP_KIND: str(step.kind)}
        links: list[Link] = []
        if step.kind == StepKind.SLEEP:
            name = f"sleep {step.id}"
            attributes[SLEEP_UNTIL] = step.wake_ms
        else:
            name = f"wait {step.id}"
            attributes[WAIT_EVENT] = step.wait_event
            attributes[WAIT_MATCH] = step.wait_match
            attributes[WAIT_TIMEOUT] = step.wake_ms
            attributes[WAIT_RESUMED_BY] = step.resumed_by_event_id or TIMED_OUT
            resumed_by = step.resumed_by_event_id
            if resumed_by:
                links.append(Link(event_context(resumed_by), {EVENT_ID: resumed_by}))
        self._emit(
            name,
            SpanContext(root.trace_id, span_id("suspension", run_id, step.id), False, trace_flags=SAMPLED),
            parent=root,
            start_ns=ms_to_ns(step.started_ms),
            end_ns=ms_to_ns(step.ended_ms or step.started_ms),
            attributes=attributes,
            links=links,
        )

    # -- spans outside runs ------------------------------------------------------------------------

    def events_sent(
        self,
        events: Iterable[tuple[str, str]],
        run_ids: Sequence[str],
        *,
        start_ns: int,
        end_ns: int,
        parent: SpanContext | None = None,
    ) -> None:
        """A SendEvent call: one span per new event (``(id, name)``), and the call's span linked to
        them and to the runs they started."""
        if self._processor is None:
            return
        links = self.event_spans(events, start_ns=start_ns, end_ns=end_ns)
        links.extend(Link(run_context(r), {"durable.link": "run started"}) for r in run_ids)
        self.rpc("SendEvent", links, start_ns=start_ns, end_ns=end_ns, parent=parent)

    def rpc(
        self,
        method: str,
        links: Sequence[Link],
        *,
        start_ns: int,
        end_ns: int,
        parent: SpanContext | None = None,
    ) -> None:
        """A server span for an RPC outside any run's trace (RPC semantic conventions); it refers to
        runs only by ``links``."""
        if self._processor is None:
            return
        trace_id = parent.trace_id if parent is not None else _random_trace_id()
        self._emit(
            f"durable.v1.Orchestrator/{method}",
            SpanContext(trace_id, _random_span_id(), False, trace_flags=SAMPLED),
            parent=parent,
            start_ns=start_ns,
            end_ns=end_ns,
            attributes={"rpc.system": "grpc", "rpc.service": "durable.v1.Orchestrator", "rpc.method": method},
            kind=SpanKind.SERVER,
            links=links,
        )

    def event_spans(self, events: Iterable[tuple[str, str]], *, start_ns: int, end_ns: int) -> list[Link]:
        """One span per ingested event (``(id, name)``); returns links to them."""
        links: list[Link] = []
        for event_id, name in events:
            ctx = event_context(event_id)
            attributes: dict[str, AttributeValue] = {EVENT_ID: event_id, EVENT_NAME: name}
            self._emit(
                f"event {name}", ctx, parent=None, start_ns=start_ns, end_ns=end_ns,
                attributes=attributes, kind=SpanKind.PRODUCER,
            )
            links.append(Link(ctx, {EVENT_ID: event_id}))
        return links

    def shutdown(self) -> None:
        """Exports what is queued and stops the processor."""
        if self._processor is not None:
            self._processor.shutdown()

    def force_flush(self) -> None:
        """Exports what is queued now."""
        if self._processor is not None:
            self._processor.force_flush()


def _random_trace_id() -> int:
    return _nonzero(int.from_bytes(os.urandom(16), "big"))


def _random_span_id() -> int:
    return _nonzero(int.from_bytes(os.urandom(8), "big"))


def configured(environ: Mapping[str, str] | None = None, *, signal: str = "TRACES") -> bool:
    """True when the OpenTelemetry environment asks for OTLP export of ``signal`` (TRACES or METRICS):
    an OTLP endpoint is set, or ``OTEL_<signal>_EXPORTER`` says ``otlp``. ``none`` or
    ``OTEL_SDK_DISABLED=true`` turn it off."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get(f"OTEL_{signal}_EXPORTER", "").strip().lower()
    if exporter:
        return "otlp" in [e.strip() for e in exporter.split(",")]
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def resource() -> Resource:
    """The process's resource: ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, else
    ``service.name=orchestrator``."""
    if os.environ.get("OTEL_SERVICE_NAME"):
        return Resource.create({})
    return Resource.create({"service.name": "orchestrator"})


def from_env() -> Tracer:
    """A tracer exporting over OTLP/gRPC as the environment says, or a disabled one."""
    if not configured():
        return Tracer(None)
    # Imported here: the exporter pulls in grpc channels and protobufs a server without tracing
    # never needs.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    logger.info("exporting traces over OTLP/gRPC")
    return Tracer(BatchSpanProcessor(OTLPSpanExporter()), resource())
