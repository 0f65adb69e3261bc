"""A real OTLP/gRPC receiver for tests: the collector's TraceService and MetricsService, keeping what
processes export so a test can assert on it.

Point processes at it with ``receiver.env()`` (the standard ``OTEL_*`` variables).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanPb


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


@dataclass(frozen=True)
class Span:
    """One received span, decoded: ids as lowercase hex, times in Unix ns."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    links: list[tuple[str, str, dict[str, Any]]]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int

    @classmethod
    def from_pb(cls, service: str, span: SpanPb) -> Span:
        return cls(
            service=service,
            name=span.name,
            trace_id=span.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_id=span.parent_span_id.hex(),
            kind=span.kind,
            start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano,
            attributes={a.key: _value(a.value) for a in span.attributes},
            links=[
                (lk.trace_id.hex(), lk.span_id.hex(), {a.key: _value(a.value) for a in lk.attributes})
                for lk in span.links
            ],
            events=[(e.name, {a.key: _value(a.value) for a in e.attributes}) for e in span.events],
            status_code=span.status.code,
        )


@dataclass
class Received:
    """Everything received so far (guarded by the receiver's lock)."""

    spans: list[Span] = field(default_factory=list)
    metric_names: set[str] = field(default_factory=set)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._r = receiver

    def Export(  # noqa: N802 (gRPC method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        spans = []
        for rs in request.resource_spans:
            service = next(
                (_value(a.value) for a in rs.resource.attributes if a.key == "service.name"), ""
            )
            for ss in rs.scope_spans:
                spans.extend(Span.from_pb(service, s) for s in ss.spans)
        with self._r.lock:
            self._r.received.spans.extend(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._r = receiver

    def Export(  # noqa: N802
        self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        names = {m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        with self._r.lock:
            self._r.received.metric_names.update(names)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class OtlpReceiver:
    """An OTLP/gRPC server on a free local port."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received = Received()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, service_name: str) -> dict[str, str]:
        """The standard OpenTelemetry environment exporting here quickly, as ``service_name``."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_SERVICE_NAME": service_name,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            # Export within a fraction of a second, so tests wait for little.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
        }

    def spans(self) -> list[Span]:
        """A snapshot of the spans received."""
        with self.lock:
            return list(self.received.spans)

    def metric_names(self) -> set[str]:
        """Names of the metrics received."""
        with self.lock:
            return set(self.received.metric_names)

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)


def running_receiver() -> Iterator[OtlpReceiver]:
    """For a fixture: a started receiver, stopped afterwards."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
