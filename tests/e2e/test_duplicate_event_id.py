"""Scenario 11: an event sent twice with the same id is ingested once and starts one run."""

from tests.support import StateDir, seed
from tests.support.runs import wait_for_run, wait_for_status, wait_for_step


def test_duplicate_event_id_starts_one_run(client, start_app, state_dir: StateDir) -> None:
    start_app("contacts")
    upload = seed.uploaded("dup.csv", "u-11", event_id="upload-u-11")
    assert client.send_sync(upload) == ["upload-u-11"]
    assert client.send_sync(upload) == ["upload-u-11"]
    run = wait_for_run(client, "upload-u-11")
    wait_for_step(client, run.id, "wait-review", "waiting")

    # Again while the run waits, and in a batch with a new event: only the new one is ingested.
    other = seed.uploaded("other.csv", "u-11b", event_id="upload-u-11b")
    assert client.send_sync([upload, other]) == ["upload-u-11", "upload-u-11b"]
    assert len(client.list_runs(event_id="upload-u-11")) == 1
    other_run = wait_for_run(client, "upload-u-11b")
    wait_for_step(client, other_run.id, "wait-review", "waiting")

    client.send_sync(seed.reviewed("u-11", approved=True, filters=[]))
    done = wait_for_status(client, run.id, "completed")
    assert done.output == {"imported": 3}
    assert all(s.status == "completed" for s in done.steps)
    assert [r.id for r in client.list_runs(event_id="upload-u-11")] == [run.id]
    # The one run for upload-u-11 validated once; the run for u-11b validated once too.
    assert sorted(e.data["filename"] for e in state_dir.executions("validate_csv")) == [
        "dup.csv",
        "other.csv",
    ]
