"""`Worker.run(event_loop=...)`: uvloop by default where it is installed, asyncio's loop on request, and
a clear error for anything else (before any signal handler is touched)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from sdk_python import Client, Event, TriggerEvent
from tests.support import StartOrchestrator, StartWorker
from tests.support.runs import wait_for_run, wait_for_status

APP = '''
import asyncio, os, sys
from sdk_python import Client, TriggerEvent

client = Client(app_id="sdk-loop")

@client.create_function(fn_id="which-loop", trigger=TriggerEvent(event="sdk/which.loop"))
async def which_loop(ctx):
    async def module():
        return type(asyncio.get_running_loop()).__module__
    return await ctx.step.run("loop", module)

if __name__ == "__main__":
    kind = os.environ.get("EVENT_LOOP")
    worker = client.worker(functions=[which_loop])
    sys.exit(worker.run(event_loop=kind) if kind else worker.run())
'''


@pytest.mark.parametrize(("kind", "module"), [(None, "uvloop"), ("asyncio", "asyncio")])
def test_functions_run_on_the_loop_asked_for(
    tmp_path: Path, start_orchestrator: StartOrchestrator, start_worker: StartWorker, kind: str | None,
    module: str,
) -> None:
    orchestrator = start_orchestrator()
    script = tmp_path / "loop_app.py"
    script.write_text(APP)
    worker = start_worker(script, orchestrator, env={"EVENT_LOOP": kind} if kind else {}, name="loop-worker")
    worker.wait_for_log("registered")
    client = Client(app_id="sdk-loop", target=orchestrator.target)
    try:
        (event_id,) = client.send_sync(Event(name="sdk/which.loop"))
        run = wait_for_status(client, wait_for_run(client, event_id).id, "completed")
        assert run.output.split(".")[0] == module, run.output
    finally:
        client.close()
    assert worker.terminate(timeout=15) == 0


def test_an_unknown_event_loop_is_a_value_error_before_anything_starts() -> None:
    client = Client(app_id="sdk-loop", target="127.0.0.1:1")

    @client.create_function(fn_id="f", trigger=TriggerEvent(event="a/b"))
    async def f(ctx):  # type: ignore[no-untyped-def]
        return None

    before = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(ValueError, match="event_loop: must be one of auto, uvloop, asyncio; got 'trio'"):
            client.worker(functions=[f]).run(event_loop="trio")
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        client.close()
