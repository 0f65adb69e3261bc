"""The worker's part of a run's trace: a span around each step.run attempt, in the run's trace.

The work item carries the W3C ``traceparent`` of the run's root span. Each step attempt has a step
span, which the orchestrator emits as a child of the run's root once it records the attempt: when the
worker reports its outcome, or, for an attempt lost with its worker, when the loss is recorded. Its
id derives from the attempt's identity (``step_span_id``: run id, step id, attempt number), so the
worker knows it without being told and the orchestrator needs no report from a worker that died. The
SDK runs the user's code inside its own span ``step.run <id>``, a child of the step span. Any span the
user opens with a normal tracer nests under it, in a coroutine or in the thread a plain function runs
in (contextvars are carried there).

The SDK uses the global tracer provider and never installs one: without one the spans cost next to
nothing and are not exported, but the context still flows, so the user's own spans (exported by
whatever the application configured) still land in the run's trace.
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from contextlib import AbstractContextManager
from types import TracebackType

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.util.types import AttributeValue

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
# A ProxyTracer: it follows whatever provider the application sets globally, even later.
_TRACER = trace.get_tracer("sdk_python")


def step_span_id(run_id: str, step_id: str, attempt: int) -> int:
    """The span id of a step attempt's span: the first 8 bytes (big-endian) of the SHA-256 of
    ``"span", "step", run_id, step_id, str(attempt)`` joined by NUL characters; 1 instead of 0.

    The orchestrator uses this very function, and the protocol documents it for other SDKs."""
    digest = hashlib.sha256("\x00".join(("span", "step", run_id, step_id, str(attempt))).encode()).digest()
    # The all-zero id is invalid in W3C trace context; a hash hitting it must still give a valid id.
    return int.from_bytes(digest[:8], "big") or 1


@functools.lru_cache(maxsize=4096)
def run_parent(traceparent: str) -> SpanContext | None:
    """The run's root span context from a work item's ``traceparent``; None when absent or invalid.
    Cached: every step of a run asks for the same one.

    Parsed here rather than by OpenTelemetry's propagator, which builds a context and a span to
    carry it (a new run's first step, measured after an idle gap: 48 us here, 129 us there). The
    rules are W3C trace context's: version 00 has exactly four fields, a later version may add
    more, version ff is invalid, and all-zero ids are invalid."""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    flags_value = TraceFlags(int(flags, 16))
    ctx = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=flags_value)
    return ctx if ctx.is_valid else None


class StepSpan:
    """Context manager around one attempt of step.run's user code; ``report`` adds the attempt's
    number and precise times to the outcome. ``attempt`` must be the number the orchestrator records
    for the attempt (``RunExecution.next_attempt``): the parent's id derives from it."""

    def __init__(self, traceparent: str, *, run_id: str, step_id: str, attempt: int) -> None:
        self._root = run_parent(traceparent)
        self._run_id = run_id
        self._step_id = step_id
        self._attempt = attempt
        self.span_id = step_span_id(run_id, step_id, attempt)
        self.started_ns = 0
        self.ended_ns = 0
        self._cm: AbstractContextManager[Span] | None = None
        self._token: object = None

    def _parent(self) -> Context | None:
        if self._root is None:
            return None  # no run trace: the span joins whatever context is current
        root = self._root
        step = SpanContext(root.trace_id, self.span_id, is_remote=True, trace_flags=root.trace_flags)
        return trace.set_span_in_context(NonRecordingSpan(step))

    def __enter__(self) -> StepSpan:
        self.started_ns = time.time_ns()
        parent = self._parent()
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            # No provider configured: a span of ours would record nothing, so only the context
            # flows (a tracer of the user's own still parents its spans on the step span).
            if parent is not None:
                self._token = otel_context.attach(parent)
            return self
        attributes: dict[str, AttributeValue] = {
            "durable.run.id": self._run_id,
            "durable.step.id": self._step_id,
            "durable.step.attempt": self._attempt,
        }
        cm = _TRACER.start_as_current_span(
            f"step.run {self._step_id}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
        cm.__enter__()
        self._cm = cm
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            cm.__exit__(exc_type, exc, tb)
        token, self._token = self._token, None
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        # After the SDK span ended: the step span, its parent, must enclose it.
        self.ended_ns = time.time_ns()

    def report(self, request: pb.CompleteStepRequest) -> None:
        """Adds the attempt and precise times to the step's completion (no ``step_span_id``: the
        orchestrator derives the same id)."""
        request.step_attempt = self._attempt
        if self.started_ns and self.ended_ns:
            request.started_unix_nano = self.started_ns
            request.ended_unix_nano = self.ended_ns
