"""Scenario 1: a valid upload, approved by its review, imports the contacts.

A review event for ANOTHER upload must not resume the run.
"""

from tests.support import StateDir, seed
from tests.support.runs import step, wait_for_run, wait_for_status, wait_for_step


def test_valid_upload_approved_imports_contacts(client, start_app, state_dir: StateDir) -> None:
    start_app("contacts")
    contacts = ["ada@example.com", "grace@example.com", "spam@example.com"]
    [upload_id] = client.send_sync(seed.uploaded("list.csv", "u-1", contacts=contacts))
    run = wait_for_run(client, upload_id)
    wait_for_step(client, run.id, "wait-review", "waiting")

    # A review of another upload: SendEvent commits the waits an event resumes before it returns, so the
    # run's state right after the call shows whether this event (wrongly) resumed it.
    [other_review] = client.send_sync(seed.reviewed("u-other", approved=True, filters=[]))
    waiting = client.get_run(run.id)
    assert waiting.status == "running"
    assert step(waiting, "wait-review").status == "waiting"
    assert [s.id for s in waiting.steps] == ["validate-upload", "enrich", "wait-review"]
    assert client.list_runs(event_id=other_review) == []  # it triggered nothing either

    [review] = client.send_sync(seed.reviewed("u-1", approved=True, filters=["spam@example.com"]))
    done = wait_for_status(client, run.id, "completed")

    assert done.output == {"imported": 2}
    assert done.error is None
    assert done.function_id == seed.FUNCTION_ID and done.app_id == seed.APP_ID
    assert done.event_id == upload_id and done.event.data["upload_id"] == "u-1"
    assert done.ended_at is not None and done.ended_at >= done.created_at
    assert [s.id for s in done.steps] == list(seed.APPROVED_STEPS)
    assert [s.status for s in done.steps] == ["completed"] * 5
    assert [s.kind for s in done.steps] == ["run", "run", "wait_for_event", "run", "run"]
    for step_id in ("validate-upload", "enrich", "create-contacts", "notify-success"):
        assert step(done, step_id).attempts == 1, step_id
    assert step(done, "validate-upload").output == {"is_valid": True, "errors": []}
    assert step(done, "create-contacts").output == 2
    wait = step(done, "wait-review")
    assert wait.output["id"] == review and wait.output["data"]["upload_id"] == "u-1"
    assert wait.resumed_by_event_id == review

    # Each step's user code ran exactly once; the rejected branch never ran.
    assert state_dir.counts() == {
        "enrich_contacts": 1,
        "insert_contacts": 1,
        "send_success_email": 1,
        "validate_csv": 1,
    }
    [inserted] = state_dir.executions("insert_contacts")
    assert inserted.data["contacts"] == ["ada@example.com", "grace@example.com"]
