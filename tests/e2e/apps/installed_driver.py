"""Drives the seed workflow's scenario 1 through an INSTALLED sdk_python (run by the installed-package test).

Standard library and the installed SDK only; the default target (localhost:50051). Prints one JSON
object on stdout with what it observed; the test makes the assertions.
"""

import dataclasses
import json
import sys
import time

import sdk_python
from sdk_python import Client, Event

DEADLINE_S = 90


def until(predicate, what):
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def upload_started(client, attempt):
    # An event starts the functions registered when it arrives and the worker registers on its own
    # schedule: send the upload (a new id each time) until one starts a run.
    [event_id] = client.send_sync(
        Event(
            name="api/contact_list.uploaded",
            data={
                "filename": "installed.csv",
                "user_id": 3,
                "upload_id": "u-15",
                "contacts": ["x@example.com"],
            },
            id=f"installed-upload-{attempt[0]}",
        )
    )
    attempt[0] += 1
    runs = client.list_runs(event_id=event_id)
    return runs[0] if runs else None


def step_status(client, run_id, step_id):
    return {s.id: s.status for s in client.get_run(run_id).steps}.get(step_id)


def main():
    client = Client(app_id="installed-driver")
    attempt = [0]
    run = until(lambda: upload_started(client, attempt), "an upload to start a run")
    until(lambda: step_status(client, run.id, "wait-review") == "waiting", "the run to wait for its review")

    client.send_sync(
        Event(
            name="api/contact_list.reviewed",
            data={"upload_id": "u-other", "is_approved": True, "filters": []},
        )
    )
    after_other = client.get_run(run.id)

    [review_id] = client.send_sync(
        Event(
            name="api/contact_list.reviewed", data={"upload_id": "u-15", "is_approved": True, "filters": []}
        )
    )
    done = until(
        lambda: (r := client.get_run(run.id)).status in ("completed", "failed", "cancelled") and r,
        "the run to end",
    )
    print(
        json.dumps(
            {
                "sdk_file": sdk_python.__file__,
                "uploads_sent": attempt[0],
                "after_other_review": {
                    "status": after_other.status,
                    "steps": {s.id: s.status for s in after_other.steps},
                },
                "review_id": review_id,
                "run": dataclasses.asdict(done),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
