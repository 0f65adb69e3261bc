"""Test app "extras": a durable sleep and a sync handler, beside the seed workflow.

Like contacts.py, each step function appends one JSON line per execution to `$E2E_STATE_DIR/<name>.log`.
"""

import json
import os
import time
from datetime import timedelta
from pathlib import Path

from sdk_python import Client, TriggerEvent

client = Client(app_id="extras", target=os.environ.get("ORCHESTRATOR_TARGET", "localhost:50051"))


def _record(fn_name, **data):
    state = Path(os.environ.get("E2E_STATE_DIR", "."))
    state.mkdir(parents=True, exist_ok=True)
    with (state / f"{fn_name}.log").open("a") as out:
        out.write(json.dumps({"t": time.time(), "pid": os.getpid(), **data}) + "\n")


async def note_before(label):
    _record("note_before", label=label)
    return {"before": label, "at": time.time()}


def note_after(label):
    _record("note_after", label=label)
    return {"after": label, "at": time.time()}


@client.create_function(fn_id="nap", trigger=TriggerEvent(event="extras/nap"), retries=2)
async def nap(ctx):
    """Records a step, sleeps durably for `data.sleep_s` seconds, records another step."""
    before = await ctx.step.run("before", note_before, ctx.event.data["label"])
    await ctx.step.sleep("nap", timedelta(seconds=ctx.event.data["sleep_s"]))
    after = await ctx.step.run("after", note_after, ctx.event.data["label"])
    return {"slept_s": ctx.event.data["sleep_s"], "before_at": before["at"], "after_at": after["at"]}


def compose_greeting(name):
    _record("compose_greeting", name=name)
    return f"Hello, {name}!"


def deliver_greeting(greeting, times):
    _record("deliver_greeting", greeting=greeting)
    return [greeting] * times


@client.create_function(fn_id="sync-greet", trigger=TriggerEvent(event="extras/greet"), retries=1)
def sync_greet(ctx):
    """A sync handler: its ctx.step is sync, so step.run returns the value directly."""
    greeting = ctx.step.run("compose", compose_greeting, ctx.event.data["name"])
    delivered = ctx.step.run("deliver", deliver_greeting, greeting, 2)
    return {"greeting": greeting, "delivered": len(delivered)}


if __name__ == "__main__":
    client.worker(functions=[nap, sync_greet]).run()
