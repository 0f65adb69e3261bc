"""Scenario 5: a flaky step is retried alone; the step before it ran exactly once."""

from tests.support import StateDir, seed
from tests.support.runs import step, wait_for_run, wait_for_status, wait_for_step


def test_flaky_step_is_retried_alone(client, start_app, state_dir: StateDir) -> None:
    start_app("contacts")
    [event_id] = client.send_sync(seed.uploaded("flaky.csv", "u-5"))
    run = wait_for_run(client, event_id)
    # enrich fails twice (backoff ~1 s then ~2 s), succeeds on its third attempt, then the run waits.
    waiting = wait_for_step(client, run.id, "wait-review", "waiting", timeout=90)
    enrich = step(waiting, "enrich")
    assert (enrich.status, enrich.attempts) == ("completed", 3)
    assert enrich.output == {"enriched": "flaky.csv"}

    client.send_sync(seed.reviewed("u-5", approved=True, filters=[]))
    done = wait_for_status(client, run.id, "completed")

    assert done.output == {"imported": 3}
    assert [(s.id, s.attempts) for s in done.steps if s.kind == "run"] == [
        ("validate-upload", 1),
        ("enrich", 3),
        ("create-contacts", 1),
        ("notify-success", 1),
    ]
    assert all(s.status == "completed" for s in done.steps)
    assert state_dir.count("validate_csv") == 1
    assert state_dir.count("enrich_contacts") == 3
    starts = [e.started for e in state_dir.executions("enrich_contacts")]
    # Retries back off (about 1 s, then 2 s, with jitter): never an immediate re-run.
    assert starts[1] - starts[0] >= 0.5 and starts[2] - starts[1] >= 1.0, starts
