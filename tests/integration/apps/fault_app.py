"""Worker app of the replica fault test: a five-step function and a function that waits for an event.

Every execution of a step's user code appends one JSON line `{"run": ..., "step": ...}` to
`$E2E_STATE_DIR/exec-<pid>.log` BEFORE returning, so the test can count executions per step, even across
SIGKILLs (a line is written whole or not at all: one small O_APPEND write).
"""

import json
import os
from datetime import timedelta
from pathlib import Path

from sdk_python import Client, TriggerEvent

RETRIES = 3
client = Client(app_id="fault", target=os.environ["ORCHESTRATOR_TARGET"])
_log = Path(os.environ["E2E_STATE_DIR"]) / f"exec-{os.getpid()}.log"
_log.parent.mkdir(parents=True, exist_ok=True)


def _work(run_id, step):
    line = (json.dumps({"run": run_id, "step": step}) + "\n").encode()
    fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return {"run": run_id, "step": step}


@client.create_function(fn_id="five-steps", trigger=TriggerEvent(event="fault/start"), retries=RETRIES)
async def five_steps(ctx):
    outputs = [await ctx.step.run(f"s{i}", _work, ctx.run_id, f"s{i}") for i in range(5)]
    return {"steps": len(outputs)}


@client.create_function(fn_id="waiter", trigger=TriggerEvent(event="fault/wait"), retries=RETRIES)
async def waiter(ctx):
    await ctx.step.run("before", _work, ctx.run_id, "before")
    got = await ctx.step.wait_for_event(
        "go", event="fault/go", match="data.key", timeout=timedelta(seconds=ctx.event.data["timeout_s"])
    )
    await ctx.step.run("after", _work, ctx.run_id, "after")
    return {"matched": got is not None}


if __name__ == "__main__":
    client.worker(functions=[five_steps, waiter], concurrency=50).run()
