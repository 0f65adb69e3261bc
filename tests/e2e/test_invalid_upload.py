"""Scenario 2: an invalid upload notifies the user and the run completes without enrichment."""

from tests.support import StateDir, seed
from tests.support.runs import step, wait_for_run, wait_for_status


def test_invalid_upload_notifies_and_completes(client, start_app, state_dir: StateDir) -> None:
    start_app("contacts")
    [event_id] = client.send_sync(seed.uploaded("invalid.csv", "u-2", user_id=42))
    run = wait_for_status(client, wait_for_run(client, event_id).id, "completed")

    errors = ["invalid.csv: line 3: missing email"]
    assert run.output == {"sent_to": 42, "errors": errors}
    assert run.error is None
    assert [s.id for s in run.steps] == ["validate-upload", "notify-invalid"]
    assert [(s.status, s.attempts) for s in run.steps] == [("completed", 1), ("completed", 1)]
    assert step(run, "validate-upload").output == {"is_valid": False, "errors": errors}
    assert state_dir.counts() == {"send_failed_email": 1, "validate_csv": 1}
