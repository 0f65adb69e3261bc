"""Python SDK for the durable workflow orchestrator (names and semantics mirror inngest-py 0.5).

```python
from sdk_python import Client, TriggerEvent, Event

client = Client(app_id="crm")

@client.create_function(fn_id="hello", trigger=TriggerEvent(event="demo/hello"))
async def hello(ctx):
    name = await ctx.step.run("load", lambda: ctx.event.data["name"])
    return {"greeting": f"hello {name}"}

client.worker(functions=[hello]).run()        # in the worker process
client.send_sync(Event(name="demo/hello", data={"name": "Ada"}))   # anywhere
```
See docs/execution-model.md for how runs, steps, retries, sleeps and waits behave.
"""

# First: it chooses grpc's I/O engine, which grpc reads when it is imported (see the module).
from sdk_python import _transport  # noqa: F401
from sdk_python.client import Client
from sdk_python.errors import (
    ClientError,
    FailedPreconditionError,
    InvalidArgumentError,
    NonDeterminismError,
    NonRetriableError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RetryAfterError,
    UnauthenticatedError,
    UnavailableError,
)
from sdk_python.function import Context, ContextSync, Function, TriggerEvent
from sdk_python.records import ErrorInfo, Event, Run, StepRecord
from sdk_python.step import Step, StepSync
from sdk_python.worker import Worker

__all__ = [
    "Client",
    "ClientError",
    "Context",
    "ContextSync",
    "ErrorInfo",
    "Event",
    "FailedPreconditionError",
    "Function",
    "InvalidArgumentError",
    "NonDeterminismError",
    "NonRetriableError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryAfterError",
    "Run",
    "Step",
    "StepRecord",
    "StepSync",
    "TriggerEvent",
    "UnauthenticatedError",
    "UnavailableError",
    "Worker",
]
