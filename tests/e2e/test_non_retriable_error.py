"""Scenario 6: NonRetriableError fails the step and the run at once, with the error recorded."""

from tests.support import StateDir, seed
from tests.support.runs import step, wait_for_run, wait_for_status


def test_non_retriable_error_fails_run_at_once(client, start_app, state_dir: StateDir) -> None:
    start_app("contacts")
    [event_id] = client.send_sync(seed.uploaded("fatal.csv", "u-6"))
    run = wait_for_status(client, wait_for_run(client, event_id).id, "failed")

    assert run.output is None
    assert run.ended_at is not None
    assert run.error is not None
    assert run.error.name == "NonRetriableError"
    assert "fatal.csv is corrupt" in run.error.message
    assert [s.id for s in run.steps] == ["validate-upload", "enrich"]
    enrich = step(run, "enrich")
    assert (enrich.status, enrich.attempts) == ("failed", 1)
    assert enrich.error is not None
    assert enrich.error.name == "NonRetriableError"
    assert "fatal.csv is corrupt" in enrich.error.message
    assert "enrich_contacts" in enrich.error.stack  # the traceback names the user function
    assert step(run, "validate-upload").status == "completed"
    assert state_dir.counts() == {"enrich_contacts": 1, "validate_csv": 1}
