"""The SDK against a real orchestrator process (SQLite file): a worker served in-process runs an async
two-step function with a flaky step, a sync function, a failure, a durable wait and a replay that no
longer matches its recorded steps."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from sdk_python import (
    Client,
    Context,
    ContextSync,
    Event,
    NonRetriableError,
    NotFoundError,
    Run,
    TriggerEvent,
    Worker,
)
from tests.support import OrchestratorProcess, wait_until_async

APP = "sdk-roundtrip"
T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, within: float = 60) -> T:
    """Polls `check` until it returns a value (not None), for up to `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Calls:
    """How many times each piece of step code ran (thread-safe: sync steps run in threads)."""

    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hit(self, name: str) -> int:
        with self.lock:
            self.counts[name] += 1
            return self.counts[name]


@dataclass
class App:
    client: Client
    worker: Worker
    calls: Calls


def build_app(target: str) -> tuple[Client, list[Any], Calls]:
    client = Client(app_id=APP, target=target)
    calls = Calls()

    def load(n: int) -> dict[str, Any]:
        calls.hit("load")
        return {"n": n, "pair": (n, n + 1)}  # the tuple comes back as a list, also on the fast path

    async def flaky(n: int) -> int:
        if calls.hit("flaky") <= 2:
            raise ConnectionError("enrichment service unreachable")
        return n * 10

    @client.create_function(fn_id="two-steps", trigger=TriggerEvent(event="sdk/two-steps"), retries=4)
    async def two_steps(ctx: Context) -> dict[str, Any]:
        loaded = await ctx.step.run("load", load, ctx.event.data["n"])
        enriched = await ctx.step.run("flaky", flaky, loaded["n"])
        return {"loaded": loaded, "enriched": enriched, "attempt": ctx.attempt}

    def compose(name: str) -> str:
        calls.hit("compose")
        return f"Hello, {name}!"

    @client.create_function(fn_id="sync-greet", trigger=TriggerEvent(event="sdk/greet"), retries=1)
    def sync_greet(ctx: ContextSync) -> dict[str, Any]:
        greeting = ctx.step.run("compose", compose, ctx.event.data["name"])
        shouted = ctx.step.run("shout", str.upper, greeting)
        return {"greeting": greeting, "shouted": shouted, "thread": threading.current_thread().name}

    def reject() -> None:
        calls.hit("reject")
        raise NonRetriableError("the upload is corrupt")

    @client.create_function(fn_id="fatal", trigger=TriggerEvent(event="sdk/fatal"), retries=3)
    async def fatal(ctx: Context) -> None:
        try:
            await ctx.step.run("reject", reject)
        except Exception:  # the SDK's interrupt must get through this
            calls.hit("swallowed")

    @client.create_function(fn_id="waiter", trigger=TriggerEvent(event="sdk/wait.start"))
    async def waiter(ctx: Context) -> dict[str, Any]:
        got = await ctx.step.wait_for_event("review", event="sdk/wait.reviewed", timeout=timedelta(minutes=5),
                                            match="data.key")
        return {"got": None if got is None else got.data}

    @client.create_function(fn_id="drifting", trigger=TriggerEvent(event="sdk/drift"))
    async def drifting(ctx: Context) -> str:
        # Not deterministic on purpose: the replay after the sleep reaches another step id.
        await ctx.step.run(f"version-{calls.hit('drift')}", lambda: "v")
        await ctx.step.sleep("pause", timedelta(milliseconds=200))
        return "unreachable"

    return client, [two_steps, sync_greet, fatal, waiter, drifting], calls


@pytest.fixture
async def app(orchestrator: OrchestratorProcess) -> AsyncIterator[App]:
    client, functions, calls = build_app(orchestrator.target)
    worker = client.worker(functions=functions, concurrency=4)
    serving = asyncio.create_task(worker.serve(), name="worker under test")
    try:
        # An event starts only the functions registered when it arrives.
        await wait_until_async(lambda: worker.registered or serving.done(), timeout=60,
                               message="the worker to register")
        assert not serving.done(), serving
        yield App(client=client, worker=worker, calls=calls)
    finally:
        await worker.stop()
        await asyncio.wait_for(serving, timeout=30)
        client.close()


async def run_for(client: Client, event: Event) -> Run:
    """Sends `event` and returns its run once it has ended."""
    (event_id,) = await client.send(event)

    async def ended() -> Run | None:
        runs = await asyncio.to_thread(client.list_runs, event_id=event_id)
        return runs[0] if runs and runs[0].status != "running" else None

    return await eventually(ended, f"the run of {event.name} to end")


async def test_async_function_completes_and_only_the_flaky_step_is_retried(app: App) -> None:
    run = await run_for(app.client, Event(name="sdk/two-steps", data={"n": 4}))
    assert run.status == "completed", run.error
    assert run.output == {"loaded": {"n": 4, "pair": [4, 5]}, "enriched": 40, "attempt": 2}
    assert (run.app_id, run.function_id) == (APP, "two-steps")
    load, flaky = run.steps
    assert (load.id, load.status, load.attempts) == ("load", "completed", 1)
    assert load.output == {"n": 4, "pair": [4, 5]}
    assert (flaky.id, flaky.status, flaky.attempts, flaky.output) == ("flaky", "completed", 3, 40)
    assert app.calls.counts["load"] == 1, "a step that completed never runs again"
    assert app.calls.counts["flaky"] == 3
    assert run.ended_at is not None and run.ended_at >= run.created_at


async def test_sync_function_runs_in_a_worker_thread(app: App) -> None:
    run = await run_for(app.client, Event(name="sdk/greet", data={"name": "Ada"}))
    assert run.status == "completed", run.error
    assert run.output["greeting"] == "Hello, Ada!" and run.output["shouted"] == "HELLO, ADA!"
    assert run.output["thread"].startswith("sdk_python run")
    assert [s.id for s in run.steps] == ["compose", "shout"]


async def test_non_retriable_error_fails_the_run_even_if_user_code_catches(app: App) -> None:
    run = await run_for(app.client, Event(name="sdk/fatal"))
    assert run.status == "failed"
    assert run.error is not None and run.error.name == "NonRetriableError"
    assert run.error.message == "the upload is corrupt"
    (step,) = run.steps
    assert (step.status, step.attempts) == ("failed", 1)
    assert step.error is not None and "reject" in step.error.stack
    assert app.calls.counts["reject"] == 1 and app.calls.counts["swallowed"] == 0


async def test_wait_for_event_resumes_with_the_matching_event(app: App) -> None:
    (start_id,) = await app.client.send(Event(name="sdk/wait.start", data={"key": "k-1"}))

    async def waiting() -> Run | None:
        runs = await asyncio.to_thread(app.client.list_runs, event_id=start_id)
        return runs[0] if runs and runs[0].steps and runs[0].steps[0].status == "waiting" else None

    parked = await eventually(waiting, "the wait to be registered")
    await app.client.send([Event(name="sdk/wait.reviewed", data={"key": "other", "ok": False}),
                           Event(name="sdk/wait.reviewed", data={"key": "k-1", "ok": True})])

    async def done() -> Run | None:
        run = await asyncio.to_thread(app.client.get_run, parked.id)
        return run if run.status != "running" else None

    run = await eventually(done, "the wait to resume")
    assert run.status == "completed", run.error
    assert run.output == {"got": {"key": "k-1", "ok": True}}


async def test_a_replay_that_reaches_another_step_fails_naming_both(app: App) -> None:
    run = await run_for(app.client, Event(name="sdk/drift"))
    assert run.status == "failed"
    assert run.error is not None and run.error.name == "NonDeterminismError"
    assert "'version-1'" in run.error.message and "'version-2'" in run.error.message


async def test_client_errors_carry_the_server_message(app: App) -> None:
    with pytest.raises(NotFoundError) as caught:
        await asyncio.to_thread(app.client.get_run, "no-such-run")
    assert caught.value.code == "NOT_FOUND" and caught.value.message
