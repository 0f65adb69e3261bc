"""Span building without processes: derived ids, the OTEL_* switch, the spans of a run's history
(through an in-memory exporter), what the store reports for spans, the observer turning it into
spans and metrics exactly once, and the queue depth the metric reports."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from orchestrator import metrics, observability, tracing
from orchestrator.engine.model import (
    Completion,
    Directive,
    ErrorInfo,
    EventRecord,
    NewEvent,
    Outcome,
    RunStatus,
    RunView,
    SendEvents,
    Sleep,
    StepAttempt,
    StepError,
    StepKind,
    StepOutput,
    StepStatus,
    StepView,
    SuspensionEnded,
    WaitForEvent,
    WorkItem,
)
from orchestrator.store.sql import SqlStore
from sdk_python import _tracing as sdk_tracing
from tests.unit.orchestrator.test_store_runs import LEASE, T0, claim_one, register, send

HOUR = 3_600_000  # later than any retry backoff

RUN_ID = "01a212c3-6b71-7167-9e2b-413733cecac5"


def _tracer() -> tuple[tracing.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return tracing.Tracer(SimpleSpanProcessor(exporter)), exporter


def test_ids_derive_from_the_run_id_and_the_traceparent_carries_them() -> None:
    root = tracing.run_context(RUN_ID)
    assert root.trace_id == uuid.UUID(RUN_ID).int
    assert tracing.run_context(RUN_ID) == root, "stable across calls and processes"
    assert tracing.run_trace_id("not-a-uuid") == tracing.run_trace_id("not-a-uuid") != 0
    assert tracing.traceparent(RUN_ID) == f"00-{uuid.UUID(RUN_ID).hex}-{root.span_id:016x}-01"
    assert tracing.event_context("e1").trace_id != tracing.event_context("e2").trace_id
    assert tracing.parse_span_id("00f067aa0ba902b7") == 0x00F067AA0BA902B7
    assert tracing.parse_span_id("nope") == 0


def test_export_is_on_only_when_the_environment_asks() -> None:
    assert not tracing.configured({})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert tracing.configured({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not tracing.configured({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"})
    assert not tracing.configured({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
    assert tracing.configured({"OTEL_METRICS_EXPORTER": "otlp"}, signal="METRICS")
    assert not tracing.Tracer(None).enabled


def test_a_failed_attempt_a_wait_and_the_run_make_one_tree() -> None:
    tracer, exporter = _tracer()
    error = ErrorInfo("ConnectionError", "unreachable")
    tracer.step_attempt(RUN_ID, "enrich", StepKind.RUN, StepAttempt(0, T0, T0 + 5, True, error))
    wait = StepView(
        id="wait-review", kind=StepKind.WAIT_FOR_EVENT, status=StepStatus.COMPLETED, attempts=1,
        output_json="{}", error=None, started_ms=T0 + 10, ended_ms=T0 + 900, wake_ms=T0 + 10_000,
        wait_event="api/reviewed", wait_match="data.upload_id", resumed_by_event_id="review-1", position=2,
    )
    tracer.suspension_ended(RUN_ID, wait)
    event = EventRecord(1, "upload-1", "api/uploaded", "{}", T0)
    view = RunView(
        RUN_ID, "crm", "contacts-import", "upload-1", RunStatus.COMPLETED, "{}", None, T0 - 1, T0 + 1_000,
        event,
    )
    tracer.run_ended(view)

    attempt, waited, run = exporter.get_finished_spans()
    root = tracing.run_context(RUN_ID)
    assert run.parent is None and run.context is not None and run.context.span_id == root.span_id
    assert run.name == "run contacts-import" and run.start_time == (T0 - 1) * 1_000_000
    assert run.attributes is not None and run.attributes["durable.event.name"] == "api/uploaded"
    assert [lk.context.span_id for lk in run.links] == [tracing.event_context("upload-1").span_id]
    assert attempt.parent == root and attempt.status.status_code == StatusCode.ERROR
    assert attempt.attributes is not None and attempt.attributes["durable.step.attempt"] == 0
    [exception] = attempt.events
    assert exception.attributes == {"exception.type": "ConnectionError", "exception.message": "unreachable"}
    assert waited.parent == root and waited.name == "wait wait-review"
    assert waited.attributes is not None and waited.attributes["durable.wait.resumed_by"] == "review-1"
    assert [lk.context for lk in waited.links] == [tracing.event_context("review-1")]


def test_send_event_links_events_and_runs_and_carries_no_run_id() -> None:
    tracer, exporter = _tracer()
    tracer.events_sent([("e1", "a/b")], [RUN_ID], start_ns=1, end_ns=2)
    event_span, send_span = exporter.get_finished_spans()
    assert event_span.kind == SpanKind.PRODUCER and event_span.parent is None
    assert send_span.kind == SpanKind.SERVER and send_span.name == "durable.v1.Orchestrator/SendEvent"
    linked = [lk.context for lk in send_span.links]
    assert linked == [tracing.event_context("e1"), tracing.run_context(RUN_ID)]
    assert send_span.attributes is not None and "durable.run.id" not in send_span.attributes


def test_queue_depth_counts_runs_ready_now(store: SqlStore) -> None:
    register(store)
    send(store)
    send(store)
    assert store.queue_depth(now_ms=T0) == 2
    store.claim_work(app_id="crm", function_ids=(), worker_id="w", max_items=1, now_ms=T0, lease_ms=30_000)
    assert store.queue_depth(now_ms=T0) == 1, "a leased run is no longer queued"


def test_a_step_span_has_the_id_the_worker_derives_unless_the_worker_reported_one() -> None:
    tracer, exporter = _tracer()
    tracer.step_attempt(RUN_ID, "enrich", StepKind.RUN, StepAttempt(2, T0, T0 + 5, False, None))
    reported = tracing.StepTrace(span_id=0x00F067AA0BA902B7)
    tracer.step_attempt(RUN_ID, "other", StepKind.RUN, StepAttempt(0, T0, T0 + 5, False, None), reported)
    derived, chosen = exporter.get_finished_spans()
    assert derived.context is not None and chosen.context is not None
    assert derived.context.span_id == sdk_tracing.step_span_id(RUN_ID, "enrich", 2)
    assert chosen.context.span_id == 0x00F067AA0BA902B7


# -- what the store reports for spans ---------------------------------------------------------------


def _claim(store: SqlStore, *, now: int):
    return store.claim_work(
        app_id="crm", function_ids=(), worker_id="w", max_items=1, now_ms=now, lease_ms=LEASE
    )


def _complete(store: SqlStore, item: WorkItem, step_id: str, outcome: Outcome, *, now: int = T0):
    completion = Completion(item.run_id, item.lease_id, step_id, outcome)
    return completion, store.complete_step(completion, now_ms=now, lease_ms=LEASE)


def _started(store: SqlStore) -> WorkItem:
    send(store)
    return claim_one(store)


def test_each_suspension_is_reported_by_the_transaction_that_ends_it_and_by_no_other(
    store: SqlStore,
) -> None:
    register(store)
    # A sleep ends at the claim that takes its run once it elapsed; a later claim reports nothing.
    item = _started(store)
    assert _complete(store, item, "nap", Sleep(T0 + 1_000))[1].ended == ()
    claimed = _claim(store, now=T0 + 1_000)
    assert claimed.ended == (SuspensionEnded(item.run_id, "nap"),)
    store.release_work(item.run_id, claimed.items[0].lease_id, now_ms=T0 + 1_000)
    assert _claim(store, now=T0 + 1_001).ended == ()

    # A wait ends with the event that resumes it...
    item = _started(store)
    assert _complete(store, item, "w", WaitForEvent("go", "", T0 + HOUR))[1].ended == ()
    assert tuple(send(store, "go").ended) == (SuspensionEnded(item.run_id, "w"),)
    _claim(store, now=T0)  # out of the way of the next claims
    # ... or with the timer that times it out.
    item = _started(store)
    _complete(store, item, "w", WaitForEvent("go", "", T0 + 1_000))
    assert store.fire_due_timers(now_ms=T0 + 1_000, since_ms=T0).ended == (SuspensionEnded(item.run_id, "w"),)

    # A sleep or wait over when reported ends in its completion, and so does a wait of another run
    # that a step.send_event resumes.
    item = _started(store)
    assert _complete(store, item, "nap", Sleep(T0))[1].ended == (SuspensionEnded(item.run_id, "nap"),)
    _, waited = _complete(store, item, "w", WaitForEvent("go", "", T0))
    assert waited.directive == Directive.CONTINUE and waited.ended == (SuspensionEnded(item.run_id, "w"),)
    waiting = _started(store)
    _complete(store, waiting, "w", WaitForEvent("go", "", T0 + HOUR))
    sender = _started(store)
    _, sent = _complete(store, sender, "send", SendEvents((NewEvent("go"),)))
    assert tuple(sent.ended) == (SuspensionEnded(waiting.run_id, "w"),)
    assert sent.attempt is not None and sent.attempt.attempt == 0


# -- the observer: spans and metrics from those reports -----------------------------------------------


def _observer(store: SqlStore) -> tuple[observability.Observer, InMemorySpanExporter, InMemoryMetricReader]:
    tracer, exporter = _tracer()
    reader = InMemoryMetricReader()

    async def get_run(run_id: str) -> RunView:
        return store.get_run(run_id)

    return observability.Observer(tracer, metrics.Metrics(MeterProvider([reader])), get_run), exporter, reader


def _attempt_spans(exporter: InMemorySpanExporter, name: str) -> list[tuple[object, object, int]]:
    """(attempt, status, span id) of the spans named ``name``, by attempt."""
    found = []
    for span in exporter.get_finished_spans():
        if span.name == name:
            assert span.attributes is not None and span.context is not None
            attempt, status = span.attributes[tracing.STEP_ATTEMPT], span.attributes[tracing.STEP_STATUS]
            found.append((attempt, status, span.context.span_id))
    return sorted(found, key=lambda f: str(f[0]))


def _span(exporter: InMemorySpanExporter, span_id: int) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.context and s.context.span_id == span_id]
    return span


def _counters(reader: InMemoryMetricReader) -> dict[str, int]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: sum(int(getattr(p, "value", 0)) for p in m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


async def test_a_sleep_is_traced_once_and_a_lost_attempt_when_the_next_outcome_records_it(
    store: SqlStore,
) -> None:
    observer, exporter, _ = _observer(store)
    register(store)
    item = _started(store)
    observer.step_completed(*_complete(store, item, "nap", Sleep(T0 + 1_000)), None)
    claimed = _claim(store, now=T0 + 1_000)
    observer.work_claimed(claimed)
    # Its worker dies inside "enrich"; the run is handed out again with the sleep as its last step.
    observer.timers_fired(store.fire_due_timers(now_ms=T0 + 1_000 + LEASE, since_ms=T0))
    again = _claim(store, now=T0 + 1_000 + LEASE)
    observer.work_claimed(again)
    assert again.items[0].lost_attempts == 1
    completion, result = _complete(store, again.items[0], "enrich", StepOutput("1"), now=T0 + HOUR)
    observer.step_completed(completion, result, None)
    await observer.settled()

    assert [s.name for s in exporter.get_finished_spans()].count("sleep nap") == 1
    ids = [sdk_tracing.step_span_id(item.run_id, "enrich", n) for n in (0, 1)]
    assert _attempt_spans(exporter, "step enrich") == [(0, "lost", ids[0]), (1, "completed", ids[1])]
    lost = _span(exporter, ids[0])
    assert lost.status.status_code == StatusCode.ERROR and lost.parent == tracing.run_context(item.run_id)
    assert [(e.name, dict(e.attributes or {})["exception.type"]) for e in lost.events] == [
        ("exception", "AttemptLost")
    ]


async def test_a_run_failed_at_lease_expiry_has_its_root_span_its_lost_attempt_and_its_metric(
    store: SqlStore,
) -> None:
    observer, exporter, reader = _observer(store)
    register(store, retries=1)
    item = _started(store)
    boom = StepError(ErrorInfo("ValueError", "boom"), True)
    observer.step_completed(*_complete(store, item, "enrich", boom), None)
    _claim(store, now=T0 + HOUR)  # the retry, whose worker dies: no attempt is left
    fired = store.fire_due_timers(now_ms=T0 + HOUR + LEASE, since_ms=T0)
    assert fired.failed_runs == (item.run_id,)
    observer.timers_fired(fired)
    await observer.settled()

    ids = [sdk_tracing.step_span_id(item.run_id, "enrich", n) for n in (0, 1)]
    assert _attempt_spans(exporter, "step enrich") == [(0, "failed", ids[0]), (1, "lost", ids[1])]
    [root] = [s for s in exporter.get_finished_spans() if s.name == "run f"]
    assert root.attributes is not None and root.attributes["durable.run.status"] == "failed"
    assert root.status.status_code == StatusCode.ERROR and root.end_time == (T0 + HOUR + LEASE) * 1_000_000
    counted = _counters(reader)
    assert counted["durable.runs.failed"] == 1 and counted["durable.lease.expiries"] == 1
