"""Scenario 4: the review never arrives; at the wait's timeout the run deletes the upload."""

from datetime import timedelta

from tests.support import StateDir, seed
from tests.support.runs import step, wait_for_run, wait_for_status

TIMEOUT_S = 2


def test_review_never_arrives_deletes_upload(client, start_app, state_dir: StateDir) -> None:
    start_app("contacts")
    [event_id] = client.send_sync(seed.uploaded("late.csv", "u-4", review_timeout_s=TIMEOUT_S))
    run = wait_for_status(client, wait_for_run(client, event_id).id, "completed")

    assert run.output == {"deleted": "late.csv"}
    assert [s.id for s in run.steps] == ["validate-upload", "enrich", "wait-review", "delete-upload"]
    wait = step(run, "wait-review")
    assert wait.kind == "wait_for_event"
    assert wait.status == "completed"
    assert wait.output is None  # timed out: no event
    assert not wait.resumed_by_event_id
    assert wait.wake_at is not None and wait.started_at is not None
    assert wait.wake_at - wait.started_at >= timedelta(seconds=TIMEOUT_S - 0.5)
    # The run cannot have ended before the wait's timeout.
    assert run.ended_at is not None and run.ended_at >= wait.wake_at
    assert step(run, "delete-upload").status == "completed"
    assert state_dir.counts() == {"delete_upload": 1, "enrich_contacts": 1, "validate_csv": 1}
