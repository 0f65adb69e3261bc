"""Scenario 8: step.sleep parks the run durably; it completes after the sleep."""

from datetime import timedelta

from tests.support import StateDir
from tests.support.runs import step, wait_for_run, wait_for_status, wait_for_step

SLEEP_S = 2


def test_sleep_step_completes_after_the_sleep(client, start_app, state_dir: StateDir) -> None:
    from sdk_python import Event

    start_app("extras")
    [event_id] = client.send_sync(Event(name="extras/nap", data={"label": "siesta", "sleep_s": SLEEP_S}))
    run = wait_for_run(client, event_id)
    sleeping = wait_for_step(client, run.id, "nap", "sleeping")
    assert sleeping.status == "running"  # a sleeping run is still "running" to the outside
    nap = step(sleeping, "nap")
    assert nap.kind == "sleep" and nap.wake_at is not None

    done = wait_for_status(client, run.id, "completed")
    assert [(s.id, s.kind, s.status) for s in done.steps] == [
        ("before", "run", "completed"),
        ("nap", "sleep", "completed"),
        ("after", "run", "completed"),
    ]
    nap = step(done, "nap")
    assert nap.output is None
    assert nap.wake_at is not None and nap.started_at is not None
    assert nap.wake_at - nap.started_at >= timedelta(seconds=SLEEP_S - 0.5)
    # The step after the sleep ran after the wake-up time, as the app's own clock saw it.
    assert done.output["after_at"] >= nap.wake_at.timestamp() - 0.5  # tolerance: clock rounding to ms
    assert done.output["after_at"] - done.output["before_at"] >= SLEEP_S - 0.5
    assert state_dir.counts() == {"note_after": 1, "note_before": 1}
