"""Scenario 10: a worker is SIGKILLed inside a long step; after its lease expires another worker runs
the step again and finishes the run. The step before it is not re-run."""

from tests.support import StartOrchestrator, StateDir, seed, wait_until
from tests.support.runs import step, wait_for_run, wait_for_status, wait_for_step

LEASE_SECONDS = 2


def test_worker_killed_during_step_another_worker_finishes(
    start_orchestrator: StartOrchestrator, start_app, connect, state_dir: StateDir
) -> None:
    server = start_orchestrator(lease_seconds=LEASE_SECONDS)
    first = start_app("contacts", server)
    client = connect(server)
    [event_id] = client.send_sync(seed.uploaded("slow.csv", "u-10"))
    run = wait_for_run(client, event_id)

    # The first worker is inside enrich (its first execution blocks for minutes).
    wait_until(lambda: state_dir.count("enrich_contacts") == 1, message="the first enrich execution")
    assert first.kill() == -9
    second = start_app("contacts", server)

    waiting = wait_for_step(client, run.id, "wait-review", "waiting")
    enrich_runs = state_dir.executions("enrich_contacts")
    assert len(enrich_runs) == 2
    assert enrich_runs[0].data["pid"] == first.pid and enrich_runs[1].data["pid"] == second.pid
    # The re-run started only after the dead worker's lease ran out.
    assert enrich_runs[1].started - enrich_runs[0].started >= LEASE_SECONDS - 0.5
    assert step(waiting, "enrich").status == "completed"

    client.send_sync(seed.reviewed("u-10", approved=True, filters=[]))
    done = wait_for_status(client, run.id, "completed")
    assert done.output == {"imported": 3}
    assert [s.id for s in done.steps] == list(seed.APPROVED_STEPS)
    assert all(s.status == "completed" for s in done.steps)
    # The killed attempt never reported anything, yet it used an attempt: the step's history shows it
    # lost with its worker, then the one that succeeded.
    enrich = step(done, "enrich")
    assert enrich.attempts == 2
    assert [(a.failed, a.error.name if a.error else None) for a in enrich.history] == [
        (True, "AttemptLost"),
        (False, None),
    ]
    assert step(done, "validate-upload").attempts == 1
    assert state_dir.count("validate_csv") == 1
    assert state_dir.count("send_success_email") == 1
