"""OpenTelemetry metrics of the orchestrator, exported over OTLP/gRPC like the traces.

Instruments (also listed in the README):

- ``durable.runs.started`` / ``durable.runs.completed`` / ``durable.runs.failed`` /
  ``durable.runs.cancelled`` (counters, ``{run}``, attribute ``durable.function.id``);
- ``durable.step.duration`` (histogram, seconds, attributes ``durable.function.id``,
  ``durable.step.kind``, ``durable.step.status``): one step attempt as the worker measured it;
- ``durable.queue.depth`` (gauge, ``{run}``): runs ready to be handed out now, as last counted;
- ``durable.lease.expiries`` (counter, ``{lease}``): leases that expired and gave their run back.

Without configuration (see ``orchestrator.tracing.configured``) every method returns at once.
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from orchestrator import tracing
from orchestrator.engine.model import RunStatus


class Metrics:
    """The orchestrator's instruments, or nothing when metrics are not configured."""

    def __init__(self, provider: MeterProvider | None) -> None:
        self._provider = provider
        self.queue_depth = 0
        if provider is None:
            return
        meter = provider.get_meter("orchestrator")
        self._runs = {
            status: meter.create_counter(f"durable.runs.{status}", unit="{run}", description=f"Runs {status}")
            for status in ("started", "completed", "failed", "cancelled")
        }
        self._step_duration = meter.create_histogram(
            "durable.step.duration", unit="s", description="Duration of one step attempt on the worker"
        )
        self._lease_expiries = meter.create_counter(
            "durable.lease.expiries", unit="{lease}", description="Leases that expired"
        )
        meter.create_observable_gauge(
            "durable.queue.depth", [self._observe_queue], unit="{run}", description="Runs ready to be claimed"
        )

    @property
    def enabled(self) -> bool:
        """True when metrics are exported."""
        return self._provider is not None

    def _observe_queue(self, options: CallbackOptions) -> Iterable[Observation]:
        # Read from the value the scheduler last stored: a callback runs on the exporter's thread and
        # must not query the database.
        return [Observation(self.queue_depth)]

    def run_started(self, function_id: str) -> None:
        """A run was created."""
        if self._provider is not None:
            self._runs["started"].add(1, {tracing.FUNCTION_ID: function_id})

    def run_ended(self, function_id: str, status: RunStatus) -> None:
        """A run ended with ``status``."""
        if self._provider is not None and status != RunStatus.RUNNING:
            self._runs[str(status)].add(1, {tracing.FUNCTION_ID: function_id})

    def step_attempt(self, function_id: str, kind: str, failed: bool, seconds: float) -> None:
        """A step attempt took ``seconds``."""
        if self._provider is not None:
            attributes = {
                tracing.FUNCTION_ID: function_id,
                tracing.STEP_KIND: kind,
                tracing.STEP_STATUS: "failed" if failed else "completed",
            }
            self._step_duration.record(max(seconds, 0.0), attributes)

    def leases_expired(self, count: int) -> None:
        """``count`` leases expired."""
        if self._provider is not None and count:
            self._lease_expiries.add(count)

    def shutdown(self) -> None:
        """Exports a last time and stops."""
        if self._provider is not None:
            self._provider.shutdown()


def from_env() -> Metrics:
    """Metrics exported over OTLP/gRPC as the environment says, or disabled ones."""
    if not tracing.configured(signal="METRICS"):
        return Metrics(None)
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    return Metrics(MeterProvider(metric_readers=[reader], resource=tracing.resource()))
