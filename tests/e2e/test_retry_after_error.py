"""Scenario 7: RetryAfterError delays the retry by the given time, not by the default ~1 s backoff."""

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from tests.support import OrchestratorProcess, StateDir, raw_stub, seed
from tests.support.runs import step, wait_for_run, wait_for_status, wait_for_step

# tests/e2e/apps/contacts.py raises RetryAfterError(..., timedelta(seconds=RETRY_AFTER_S)) once.
RETRY_AFTER_S = 3


def test_retry_after_error_delays_the_retry(
    orchestrator: OrchestratorProcess, client, start_app, state_dir: StateDir
) -> None:
    start_app("contacts")
    [event_id] = client.send_sync(seed.uploaded("retry-after.csv", "u-7"))
    run = wait_for_run(client, event_id)
    waiting = wait_for_step(client, run.id, "wait-review", "waiting")

    enrich = step(waiting, "enrich")
    assert (enrich.status, enrich.attempts) == ("completed", 2)

    # The gap between the two attempts, from what the app recorded when each attempt's code started...
    first, second = state_dir.executions("enrich_contacts")
    assert second.started - first.started >= RETRY_AFTER_S, (first, second)

    # ...and from the attempt history the orchestrator recorded (end of attempt 0 to start of attempt 1).
    with raw_stub(orchestrator.target) as stub:
        history = next(s for s in stub.GetRun(pb.GetRunRequest(run_id=run.id)).run.steps if s.id == "enrich")
    attempts = list(history.attempt_history)
    assert [(a.attempt, a.failed) for a in attempts] == [(0, True), (1, False)]
    assert attempts[0].error.name == "RetryAfterError"
    assert attempts[0].error.message == "enrichment rate limited"
    gap_ms = attempts[1].started_unix_ms - attempts[0].ended_unix_ms
    assert gap_ms >= RETRY_AFTER_S * 1000, attempts

    client.send_sync(seed.reviewed("u-7", approved=False))
    done = wait_for_status(client, run.id, "completed")
    assert [(s.id, s.status, s.attempts) for s in done.steps if s.kind == "run"] == [
        ("validate-upload", "completed", 1),
        ("enrich", "completed", 2),
        ("delete-upload", "completed", 1),
    ]
    assert state_dir.counts() == {"delete_upload": 1, "enrich_contacts": 2, "validate_csv": 1}
