"""Test app "traced": the seed workflow plus a sleep and user spans, in a worker that configures
OpenTelemetry the way an application would (the SDK itself never installs a tracer provider).

It serves the app "crm" of contacts.py: the seed function `contacts-import`, and
- `traced-nap` (async handler): a step whose plain function opens a user span, a durable sleep of
  `data.sleep_s`, a step whose coroutine function opens a user span, and a step.send_event;
- `traced-sync` (sync handler): one step whose function opens a user span.
"""

import asyncio
import atexit
from datetime import timedelta

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


if __name__ == "__main__":
    contacts.client.worker(functions=[contacts.contacts_import, traced_nap, traced_sync]).run()
