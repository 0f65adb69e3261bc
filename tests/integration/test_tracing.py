"""Traces over OTLP: the orchestrator and a worker export through the standard OTEL_* environment to a
real OTLP/gRPC receiver; each run is one trace whose tree, attributes and links are checked.

The seed workflow runs with a flaky step (retried twice) and a wait that the review event resumes after
the orchestrator was SIGKILLed and restarted; the "traced" app adds a durable sleep and user spans in
step code (a plain function, a coroutine function, and a sync handler). Across the same restart, three
runs lose their worker while a step's outcome is unreported (the worker exported its span for the step,
then was SIGKILLed): one after a sleep and one after a wait (another worker finishes them), and one on
its step's last attempt (the lease expiry fails it).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support import (
    FunctionSpec,
    StartOrchestrator,
    StartWorker,
    StateDir,
    base_env,
    register_functions,
    seed,
    wait_until,
)
from tests.support.otlp import OtlpReceiver, Span, running_receiver
from tests.support.runs import wait_for_run, wait_for_status, wait_for_step

TRACED_FUNCTIONS = (
    *seed.FUNCTIONS,
    FunctionSpec("traced-nap", "traced/nap", retries=1),
    FunctionSpec("traced-sync", "traced/sync", retries=1),
    FunctionSpec("traced-lost", "traced/lost", retries=1),
)
INTERNAL, SERVER, PRODUCER = 1, 2, 4  # OTLP SpanKind values
STATUS_ERROR = 2
# Short, so the dead worker's leases run out soon after the orchestrator restarts.
LEASE_SECONDS = 2
WORKER_ENV = {"OTEL_SERVICE_NAME": "traced-worker"}
# traced-lost runs by gate label: event data, and how often gated_work starts before the worker dies.
LOST_RUNS = {
    "after-sleep": ({"hold": "sleep"}, 1),
    "after-wait": ({"hold": "wait"}, 1),
    "last-try": ({"fail_first": True}, 2),
}


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    yield from running_receiver()


def _trace(receiver: OtlpReceiver, run_id: str) -> list[Span]:
    trace_id = uuid.UUID(run_id).hex
    return [s for s in receiver.spans() if s.trace_id == trace_id]


def _wait_spans(receiver: OtlpReceiver, run_id: str, *names: str) -> list[Span]:
    def arrived() -> list[Span] | None:
        spans = _trace(receiver, run_id)
        present = {s.name for s in spans}
        return spans if all(n in present for n in names) else None

    found: list[Span] = wait_until(
        arrived, timeout=30, message=lambda: f"spans {names} of run {run_id}: {_names(receiver, run_id)}"
    )
    return found


def _names(receiver: OtlpReceiver, run_id: str) -> list[str]:
    return sorted(s.name for s in _trace(receiver, run_id))


def _one(spans: list[Span], name: str) -> Span:
    matching = [s for s in spans if s.name == name]
    assert len(matching) == 1, (name, [s.name for s in spans])
    return matching[0]


def _assert_tree(spans: list[Span], run_id: str) -> Span:
    """Exactly one root (the run), every other span's parent is in the trace, only run spans."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_id]
    assert [r.name for r in roots] == [roots[0].name] and roots[0].name.startswith("run "), roots
    assert all(s.parent_id in ids for s in spans if s.parent_id), [(s.name, s.parent_id) for s in spans]
    assert len(ids) == len(spans), "span ids are unique within a trace"
    assert all(s.attributes.get("durable.run.id") == run_id for s in spans if s.service == "orchestrator")
    return roots[0]


@pytest.mark.sqlite_only("spans are built from the same store records on both databases")
def test_runs_are_traced_across_a_restart(
    # First: set up before the processes and so torn down after them, it still receives what they
    # export as they stop (instead of letting them retry an absent endpoint until they are killed).
    receiver: OtlpReceiver,
    start_orchestrator: StartOrchestrator,
    start_worker: StartWorker,
    connect,
    state_dir: StateDir,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sdk_python import Event, UnavailableError

    # Subprocesses inherit the test's environment (tests.support.base_env).
    for key, value in receiver.env("orchestrator").items():
        monkeypatch.setenv(key, value)
    server = start_orchestrator(lease_seconds=LEASE_SECONDS)
    register_functions(server.target, seed.APP_ID, TRACED_FUNCTIONS)
    first_worker = start_worker("traced", server, env=WORKER_ENV)
    client = connect(server)

    # -- the seed workflow: a flaky step, then a wait resumed after an orchestrator restart ----------
    [upload_id] = client.send_sync(seed.uploaded("flaky.csv", "u-t", event_id="upload-u-t"))
    # -- and runs whose worker dies with a step's outcome unreported, their gated steps in flight ----
    lost_events = {
        label: client.send_sync(Event(name="traced/lost", data={"label": label, **data}))[0]
        for label, (data, _) in LOST_RUNS.items()
    }
    lost_runs = {label: wait_for_run(client, event_id).id for label, event_id in lost_events.items()}
    wait_for_step(client, lost_runs["after-wait"], "hold", "waiting")
    client.send_sync(Event(name="traced/go", data={"label": "after-wait"}))
    run = wait_for_run(client, upload_id)
    wait_for_step(client, run.id, "wait-review", "waiting", timeout=90)
    # The spans of the steps before the wait left the orchestrator before it is killed.
    wait_until(
        lambda: [s.name for s in _trace(receiver, run.id)].count("step enrich") == 3,
        timeout=30,
        message=lambda: f"three enrich attempt spans: {_names(receiver, run.id)}",
    )
    wait_until(
        lambda: _gated_starts(state_dir) == {label: starts for label, (_, starts) in LOST_RUNS.items()},
        message=lambda: f"gated steps in flight: {_gated_starts(state_dir)}",
    )
    # The sleep and the wait ended before the restart: their spans left with the first orchestrator.
    for label, name in (("after-sleep", "sleep pause"), ("after-wait", "wait hold")):
        _wait_spans(receiver, lost_runs[label], name)
    assert server.kill() == -9
    # The gated steps return while the orchestrator is down: the worker exports its spans for them
    # but cannot report their outcomes, and dies. The orchestrator never hears of these attempts.
    for label in LOST_RUNS:
        (state_dir.path / f"open-{label}").touch()
    for label, (_, starts) in LOST_RUNS.items():
        wait_until(
            lambda label=label, starts=starts: _count(receiver, lost_runs[label], "step.run gated") == starts,
            timeout=30,
            message=lambda label=label: f"the dead worker's step spans: {_names(receiver, lost_runs[label])}",
        )
    assert first_worker.kill() == -9
    server.restart()
    start_worker("traced", server, env=WORKER_ENV)

    review = seed.reviewed("u-t", approved=True, event_id="review-u-t")

    def send_review() -> bool:
        try:
            return client.send_sync(review) == ["review-u-t"]
        except UnavailableError:
            return False

    wait_until(send_review, timeout=30, message="the review event accepted after the restart")
    wait_for_status(client, run.id, "completed")
    spans = _wait_spans(receiver, run.id, "run contacts-import", "wait wait-review", "step notify-success")
    root = _assert_tree(spans, run.id)

    assert root.span_id == _root_span_id(run.id)
    assert root.attributes == {
        "durable.run.id": run.id,
        "durable.app.id": "crm",
        "durable.function.id": "contacts-import",
        "durable.event.id": "upload-u-t",
        "durable.event.name": seed.UPLOADED,
        "durable.run.status": "completed",
    }
    enrich = sorted((s for s in spans if s.name == "step enrich"), key=lambda s: s.start_ns)
    assert [s.attributes["durable.step.attempt"] for s in enrich] == [0, 1, 2]
    assert [s.attributes["durable.step.status"] for s in enrich] == ["failed", "failed", "completed"]
    assert all(s.parent_id == root.span_id for s in enrich)
    for failed in enrich[:2]:
        assert failed.status_code == STATUS_ERROR
        [(event_name, exception)] = failed.events
        assert event_name == "exception"
        assert exception["exception.type"] == "ConnectionError"
        assert "enrichment service unreachable" in exception["exception.message"]
    # The worker's span for each attempt is the child of the orchestrator's step span.
    for attempt in enrich:
        [sdk_span] = [s for s in spans if s.name == "step.run enrich" and s.parent_id == attempt.span_id]
        assert sdk_span.service == "traced-worker"
        assert attempt.start_ns <= sdk_span.start_ns <= sdk_span.end_ns <= attempt.end_ns

    wait = _one(spans, "wait wait-review")
    assert wait.parent_id == root.span_id
    assert wait.attributes["durable.wait.event"] == seed.REVIEWED
    assert wait.attributes["durable.wait.match"] == "data.upload_id"
    assert wait.attributes["durable.wait.resumed_by"] == "review-u-t"
    # Linked to the resuming event's span, which the SendEvent call (after the restart) emitted.
    [(link_trace, link_span, _)] = wait.links
    event_span = _wait_one(receiver, "event " + seed.REVIEWED, "review-u-t")
    assert (link_trace, link_span) == (event_span.trace_id, event_span.span_id)
    assert not event_span.parent_id and event_span.kind == PRODUCER
    # The trigger's SendEvent span links to the event and to the run it started, and has no run id.
    send = _rpc_span_linking(receiver, "SendEvent", root)
    assert "durable.run.id" not in send.attributes and send.kind == SERVER
    get = _rpc_span_linking(receiver, "GetRun", root)  # the test's own polling
    assert "durable.run.id" not in get.attributes and get.trace_id != root.trace_id

    # `runs show` draws the same history and prints the trace id to paste into Jaeger.
    shown = subprocess.run(
        [sys.executable, "-m", "orchestrator", "runs", "show", run.id, "--target", server.target],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=base_env(),
    ).stdout
    assert "trace:" in shown and root.trace_id in shown, shown
    assert "└─ attempt 2" in shown and "ConnectionError: enrichment service unreachable" in shown, shown
    assert f"{seed.REVIEWED} matching data.upload_id" in shown and "resumed by review-u-t" in shown, shown

    # -- a sleep and user spans in step code --------------------------------------------------------
    [nap_event] = client.send_sync(Event(name="traced/nap", data={"label": "n", "sleep_s": 1}))
    [sync_event] = client.send_sync(Event(name="traced/sync", data={"label": "s"}))
    nap = wait_for_status(client, wait_for_run(client, nap_event).id, "completed")
    sync = wait_for_status(client, wait_for_run(client, sync_event).id, "completed")

    nap_spans = _wait_spans(receiver, nap.id, "run traced-nap", "sleep nap", "user.sync", "user.async")
    nap_root = _assert_tree(nap_spans, nap.id)
    sleep = _one(nap_spans, "sleep nap")
    assert sleep.parent_id == nap_root.span_id
    assert sleep.end_ns - sleep.start_ns >= 900_000_000  # it spans the durable sleep (1 s)
    for user_name, step_id in (("user.sync", "sync-work"), ("user.async", "async-work")):
        user = _one(nap_spans, user_name)
        sdk_span = _one(nap_spans, f"step.run {step_id}")
        step_span = _one(nap_spans, f"step {step_id}")
        assert (user.parent_id, sdk_span.parent_id, step_span.parent_id) == (
            sdk_span.span_id,
            step_span.span_id,
            nap_root.span_id,
        )

    # step.send_event: the step's span links to the span of the event it sent.
    announce = _wait_spans(receiver, nap.id, "step announce")
    [(_, linked_span, linked)] = _one(announce, "step announce").links
    announced = _wait_one(receiver, "event traced/announced", linked["durable.event.id"])
    assert announced.span_id == linked_span

    sync_spans = _wait_spans(receiver, sync.id, "run traced-sync", "user.sync")
    sync_root = _assert_tree(sync_spans, sync.id)
    user = _one(sync_spans, "user.sync")
    sdk_span = _one(sync_spans, "step.run sync-handler-work")
    step_span = _one(sync_spans, "step sync-handler-work")
    assert (user.parent_id, sdk_span.parent_id, step_span.parent_id) == (
        sdk_span.span_id,
        step_span.span_id,
        sync_root.span_id,
    )

    # -- attempts lost with their worker: every span has its parent, suspensions appear once ---------
    for label, run_id in lost_runs.items():
        _check_lost_attempt(client, receiver, label, run_id)

    # Metrics reach the same receiver; the only failed run is the one that failed at lease expiry.
    expected = {"durable.runs.started", "durable.runs.completed", "durable.step.duration"}
    expected |= {"durable.queue.depth", "durable.runs.failed", "durable.lease.expiries"}
    wait_until(
        lambda: expected <= receiver.metric_names(),
        timeout=30,
        message=lambda: f"metrics, got {receiver.metric_names()}",
    )


def _check_lost_attempt(client, receiver: OtlpReceiver, label: str, run_id: str) -> None:
    """The gated step's attempt that died with the first worker is in the trace as a lost step span,
    the parent of the span that worker exported for it. After a sleep or a wait, the second worker
    finishes the run (the loss numbered its attempt 1) and the suspension's span is not emitted
    again; on the last try the loss fails the run at lease expiry, and its root span says so."""
    failed = label == "last-try"
    wait_for_status(client, run_id, "failed" if failed else "completed")
    spans = _wait_spans(receiver, run_id, "run traced-lost")
    wait_until(
        lambda: _count(receiver, run_id, "step gated") == 2,
        timeout=30,
        message=lambda: f"two gated attempt spans: {_names(receiver, run_id)}",
    )
    spans = _trace(receiver, run_id)
    root = _assert_tree(spans, run_id)
    gated = sorted((s for s in spans if s.name == "step gated"), key=lambda s: s.start_ns)
    statuses = ["failed", "lost"] if failed else ["lost", "completed"]
    numbered = [(s.attributes["durable.step.attempt"], s.attributes["durable.step.status"]) for s in gated]
    assert sorted(numbered) == list(enumerate(statuses)), numbered
    gated.sort(key=lambda s: s.attributes["durable.step.attempt"])
    lost = gated[statuses.index("lost")]
    assert lost.parent_id == root.span_id and lost.status_code == STATUS_ERROR
    [(event_name, exception)] = lost.events
    assert event_name == "exception" and exception["exception.type"] == "AttemptLost"
    # Each SDK span hangs under the step span of the attempt it numbered: the dead worker's under the
    # lost one, the second worker's (numbered after the loss) under the one that completed.
    for attempt in gated:
        [sdk_span] = [s for s in spans if s.name == "step.run gated" and s.parent_id == attempt.span_id]
        assert sdk_span.attributes["durable.step.attempt"] == attempt.attributes["durable.step.attempt"]
    if failed:
        assert root.attributes["durable.run.status"] == "failed" and root.status_code == STATUS_ERROR
        [(_, run_error)] = root.events
        assert run_error["exception.type"] == "AttemptLost"
    else:
        suspension = "sleep pause" if label == "after-sleep" else "wait hold"
        assert Counter(s.name for s in spans)[suspension] == 1, _names(receiver, run_id)


def _gated_starts(state_dir: StateDir) -> dict[str, int]:
    return dict(Counter(e.data["label"] for e in state_dir.executions("gated_work")))


def _count(receiver: OtlpReceiver, run_id: str, name: str) -> int:
    return sum(1 for s in _trace(receiver, run_id) if s.name == name)


def _root_span_id(run_id: str) -> str:
    from orchestrator import tracing

    return f"{tracing.run_context(run_id).span_id:016x}"


def _wait_one(receiver: OtlpReceiver, name: str, event_id: str) -> Span:
    def found() -> Span | None:
        for s in receiver.spans():
            if s.name == name and s.attributes.get("durable.event.id") == event_id:
                return s
        return None

    span: Span = wait_until(found, timeout=30, message=f"span {name} of event {event_id}")
    return span


def _rpc_span_linking(receiver: OtlpReceiver, method: str, root: Span) -> Span:
    def found() -> Span | None:
        for s in receiver.spans():
            if s.name == f"durable.v1.Orchestrator/{method}" and any(
                (t, i) == (root.trace_id, root.span_id) for t, i, _ in s.links
            ):
                return s
        return None

    span: Span = wait_until(found, timeout=30, message=f"the {method} span linking to the run")
    return span
