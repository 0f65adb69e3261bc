"""Scenario 3: a rejected review deletes the upload and imports nothing."""

from tests.support import StateDir, seed
from tests.support.runs import step, wait_for_run, wait_for_status, wait_for_step


def test_rejected_review_deletes_upload(client, start_app, state_dir: StateDir) -> None:
    start_app("contacts")
    [event_id] = client.send_sync(seed.uploaded("rejected.csv", "u-3"))
    run = wait_for_run(client, event_id)
    wait_for_step(client, run.id, "wait-review", "waiting")

    [review] = client.send_sync(seed.reviewed("u-3", approved=False))
    done = wait_for_status(client, run.id, "completed")

    assert done.output == {"deleted": "rejected.csv"}
    assert [s.id for s in done.steps] == ["validate-upload", "enrich", "wait-review", "delete-upload"]
    assert all(s.status == "completed" for s in done.steps), done.steps
    assert step(done, "wait-review").output["id"] == review
    assert step(done, "delete-upload").attempts == 1
    assert state_dir.counts() == {"delete_upload": 1, "enrich_contacts": 1, "validate_csv": 1}
