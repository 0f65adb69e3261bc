"""Test app "traced": the seed workflow plus a sleep and user spans, in a worker that configures
OpenTelemetry the way an application would (the SDK itself never installs a tracer provider).

It serves the app "crm" of contacts.py: the seed function `contacts-import`, and
- `traced-nap` (async handler): a step whose plain function opens a user span, a durable sleep of
  `data.sleep_s`, a step whose coroutine function opens a user span, and a step.send_event;
- `traced-sync` (sync handler): one step whose function opens a user span;
- `traced-lost` (async handler, one retry): after a durable sleep (`data.hold == "sleep"`) or a wait
  for `traced/go` with the same `data.label` (`"wait"`), or at once, a step `gated` that fails on its
  first execution when `data.fail_first`, and otherwise returns once the test opens its gate (creates
  `$E2E_STATE_DIR/open-<label>`): a test can kill the worker while the step's outcome is unreported.
"""

import asyncio
import atexit
import os
import time
from datetime import timedelta
from pathlib import Path

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# The application's choice, from the standard OTEL_* environment.
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
atexit.register(provider.shutdown)

import contacts  # noqa: E402  (this directory is on sys.path when run as a script)

from sdk_python import Event, TriggerEvent  # noqa: E402

tracer = trace.get_tracer("traced-app")


def sync_work(label):
    with tracer.start_as_current_span("user.sync", attributes={"label": label}):
        return {"sync": label}


async def async_work(label):
    with tracer.start_as_current_span("user.async", attributes={"label": label}):
        await asyncio.sleep(0)
        return {"async": label}


def gated_work(label, fail_first):
    # A plain function: it runs in a thread, and the worker's event loop keeps the lease alive.
    previous = [e for e in contacts._record("gated_work", label=label) if e["label"] == label]
    if fail_first and not previous:
        raise ConnectionError(f"{label}: the first execution fails")
    gate = Path(os.environ.get("E2E_STATE_DIR", ".")) / f"open-{label}"
    while not gate.exists():
        time.sleep(0.02)
    return {"gated": label}


@contacts.client.create_function(fn_id="traced-nap", trigger=TriggerEvent(event="traced/nap"), retries=1)
async def traced_nap(ctx):
    first = await ctx.step.run("sync-work", sync_work, ctx.event.data["label"])
    await ctx.step.sleep("nap", timedelta(seconds=ctx.event.data["sleep_s"]))
    second = await ctx.step.run("async-work", async_work, ctx.event.data["label"])
    await ctx.step.send_event("announce", Event(name="traced/announced", data={"label": first["sync"]}))
    return {**first, **second}


@contacts.client.create_function(fn_id="traced-sync", trigger=TriggerEvent(event="traced/sync"), retries=1)
def traced_sync(ctx):
    return ctx.step.run("sync-handler-work", sync_work, ctx.event.data["label"])


@contacts.client.create_function(fn_id="traced-lost", trigger=TriggerEvent(event="traced/lost"), retries=1)
async def traced_lost(ctx):
    data = ctx.event.data
    if data.get("hold") == "sleep":
        await ctx.step.sleep("pause", timedelta(seconds=0.5))
    elif data.get("hold") == "wait":
        await ctx.step.wait_for_event(
            "hold", event="traced/go", match="data.label", timeout=timedelta(hours=1)
        )
    return await ctx.step.run("gated", gated_work, data["label"], bool(data.get("fail_first")))


if __name__ == "__main__":
    functions = [contacts.contacts_import, traced_nap, traced_sync, traced_lost]
    contacts.client.worker(functions=functions).run()
