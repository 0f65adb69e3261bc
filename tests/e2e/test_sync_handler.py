"""Scenario 14: a sync handler (`def f(ctx)`) with sync step functions runs to completion.

Also: the worker exits 0 on SIGTERM.
"""

from tests.support import StateDir
from tests.support.runs import wait_for_run, wait_for_status


def test_sync_handler_completes(client, start_app, state_dir: StateDir) -> None:
    from sdk_python import Event

    worker = start_app("extras")
    [event_id] = client.send_sync(Event(name="extras/greet", data={"name": "Ada"}))
    run = wait_for_status(client, wait_for_run(client, event_id).id, "completed")

    assert run.function_id == "sync-greet" and run.app_id == "extras"
    assert run.output == {"greeting": "Hello, Ada!", "delivered": 2}
    assert [(s.id, s.kind, s.status, s.attempts) for s in run.steps] == [
        ("compose", "run", "completed", 1),
        ("deliver", "run", "completed", 1),
    ]
    assert [s.output for s in run.steps] == ["Hello, Ada!", ["Hello, Ada!", "Hello, Ada!"]]
    assert state_dir.counts() == {"compose_greeting": 1, "deliver_greeting": 1}

    assert worker.terminate() == 0
