"""Scenario 9: the orchestrator is SIGKILLed while a run waits; after a restart on the same database the
review event resumes the run, and nothing before the wait runs again."""

from tests.support import StartOrchestrator, StateDir, seed, wait_until
from tests.support.runs import step, wait_for_run, wait_for_status, wait_for_step


def test_orchestrator_killed_during_wait_then_resumed(
    start_orchestrator: StartOrchestrator, start_app, connect, state_dir: StateDir
) -> None:
    from sdk_python import Run, UnavailableError

    server = start_orchestrator()
    start_app("contacts", server)
    client = connect(server)
    [event_id] = client.send_sync(seed.uploaded("restart.csv", "u-9"))
    run = wait_for_run(client, event_id)
    wait_for_step(client, run.id, "wait-review", "waiting")

    assert server.kill() == -9
    server.restart()

    # The run survived the crash, still waiting. (The client's channel may still be in its reconnect
    # backoff from the outage: reads are safe to repeat until it is back.)
    def read_run() -> Run | None:
        try:
            return client.get_run(run.id)
        except UnavailableError:
            return None

    survived = wait_until(read_run, timeout=30, message="the run to be readable after the restart")
    assert survived.status == "running" and step(survived, "wait-review").status == "waiting"

    review = seed.reviewed("u-9", approved=True, filters=["ada@example.com"], event_id="review-u-9")

    def send_review() -> bool:
        # The client's channel may still be reconnecting: a send with a fixed id is safe to repeat.
        try:
            return client.send_sync(review) == ["review-u-9"]
        except UnavailableError:
            return False

    wait_until(send_review, timeout=30, message="the review event to be accepted after the restart")
    done = wait_for_status(client, run.id, "completed")

    assert done.output == {"imported": 2}
    assert [s.id for s in done.steps] == list(seed.APPROVED_STEPS)
    assert all(s.status == "completed" for s in done.steps)
    assert step(done, "wait-review").output["id"] == "review-u-9"
    assert step(done, "enrich").attempts == 1
    # Nothing before the wait ran twice; the worker reconnected and finished the run.
    assert state_dir.counts() == {
        "enrich_contacts": 1,
        "insert_contacts": 1,
        "send_success_email": 1,
        "validate_csv": 1,
    }
