"""Span building without processes: derived ids, the OTEL_* switch, the spans of a run's history
(through an in-memory exporter), and the queue depth the metric reports."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from orchestrator import tracing
from orchestrator.engine.model import (
    ErrorInfo,
    EventRecord,
    RunStatus,
    RunView,
    StepAttempt,
    StepKind,
    StepStatus,
    StepView,
)
from orchestrator.store.sql import SqlStore
from tests.unit.orchestrator.test_store_runs import T0, register, send

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
