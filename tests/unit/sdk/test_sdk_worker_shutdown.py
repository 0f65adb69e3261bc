"""`Worker.run()` on SIGTERM: it stops at once (a step stuck in blocking code does not hold the process),
exits 0, and hands its in-flight runs back, so another worker finishes them long before their lease
would have expired."""

from __future__ import annotations

import time
from pathlib import Path

from sdk_python import Client, Event
from tests.support import StartOrchestrator, StartWorker, wait_until

LEASE_SECONDS = 120  # without a hand-back the runs would stay stuck this long

APP = '''
import os, sys, time
from datetime import timedelta
from sdk_python import Client, TriggerEvent

client = Client(app_id="sdk-shutdown")

def work(kind, n):
    print(f"step started: {kind}", flush=True)
    if os.environ.get("BLOCK") == "1":
        time.sleep(600)  # blocking code the worker cannot interrupt
    return n + 1

@client.create_function(fn_id="slow-async", trigger=TriggerEvent(event="sdk/slow.async"))
async def slow_async(ctx):
    return await ctx.step.run("work", work, "async", ctx.event.data["n"])

@client.create_function(fn_id="slow-sync", trigger=TriggerEvent(event="sdk/slow.sync"))
def slow_sync(ctx):
    return ctx.step.run("work", work, "sync", ctx.event.data["n"])

if __name__ == "__main__":
    sys.exit(client.worker(functions=[slow_async, slow_sync], shutdown_timeout=timedelta(seconds=1)).run())
'''


def test_sigterm_hands_in_flight_runs_back_and_exits_zero(
    tmp_path: Path, start_orchestrator: StartOrchestrator, start_worker: StartWorker
) -> None:
    orchestrator = start_orchestrator(lease_seconds=LEASE_SECONDS)
    script = tmp_path / "shutdown_app.py"
    script.write_text(APP)
    first = start_worker(script, orchestrator, env={"BLOCK": "1"}, name="blocking-worker")
    first.wait_for_log("registered")

    client = Client(app_id="sdk-shutdown", target=orchestrator.target)
    try:
        event_ids = client.send_sync([Event(name="sdk/slow.async", data={"n": 1}),
                                      Event(name="sdk/slow.sync", data={"n": 10})])
        wait_until(lambda: first.output_since_start().count("step started") == 2, timeout=60,
                   message="both steps to start")

        stopped_at = time.monotonic()
        assert first.terminate(timeout=15) == 0
        assert time.monotonic() - stopped_at < 10, "a blocked step must not hold the process"
        assert first.output_since_start().count("handed back") == 2, first.logs()

        second = start_worker(script, orchestrator, name="healthy-worker")

        def both_completed() -> list[object] | None:
            runs = [client.list_runs(event_id=event_id) for event_id in event_ids]
            if all(len(r) == 1 and r[0].status == "completed" for r in runs):
                return [r[0].output for r in runs]
            return None

        outputs = wait_until(both_completed, timeout=LEASE_SECONDS / 3,
                             message="the handed-back runs to finish")
        assert outputs == [2, 11]
        assert second.output_since_start().count("step started") == 2
    finally:
        client.close()
