"""The worker: registers an app's functions, long-polls for work and executes runs.

Parts, each a named task owned by the worker:
- the poll loop: RegisterFunctions, then PollWork for as many items as there are free slots; on
  UNAVAILABLE it backs off (0.1 s doubling to 5 s) and registers again: it never gives up;
- one task per leased run, executing the function from the top against its memo;
- one heartbeat per run, extending its lease every third of the lease; losing the lease abandons the run.

Shutdown (`stop()`, or SIGINT/SIGTERM under `run()`) drains in a fixed order: stop polling (cancel the
parked poll), let in-flight runs finish for `shutdown_timeout`, cancel the rest and hand them back with
ReleaseWork so another worker takes them at once, close the channel.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Awaitable, MutableMapping, Sequence
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

import grpc

from sdk_python._execution import RunExecution, RunFailing, RunStopped
from sdk_python._failures import Failure, classify, final
from sdk_python._loops import loop_factory
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._rpc import Connection, backoff, translate
from sdk_python._threads import run_in_thread
from sdk_python._wire import NotSerialisableError, encode_json, error_to_pb, event_from_pb, now_ms
from sdk_python.errors import (
    ClientError,
    InvalidArgumentError,
    NonDeterminismError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from sdk_python.function import Context, ContextSync, Function
from sdk_python.step import Step, StepSync

if TYPE_CHECKING:
    from sdk_python.client import Client

__all__ = ["Worker"]

logger = logging.getLogger("sdk_python")

# Registration errors that retrying cannot fix: the worker stops with them instead of looping.
_FATAL_REGISTRATION = (InvalidArgumentError, UnauthenticatedError, PermissionDeniedError)


class _RunLogger(logging.LoggerAdapter[logging.Logger]):
    """`ctx.logger`: the SDK's logger with the run id in front of every line."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        return f"run {self.extra['run_id'] if self.extra else '?'}: {msg}", kwargs


class Worker:
    """Executes runs of the given functions. Build it with `client.worker(functions=[...])`.

    `run()` blocks until SIGINT/SIGTERM and returns 0; in asyncio programs `await serve()` and, from
    elsewhere, `await stop()` (idempotent; it returns once the worker has drained). A second signal skips
    the rest of the grace period. A stopped worker stays stopped.
    """

    def __init__(
        self,
        client: Client,
        *,
        functions: Sequence[Function],
        concurrency: int = 10,
        shutdown_timeout: timedelta = timedelta(seconds=10),
        poll_wait: timedelta = timedelta(seconds=30),
        worker_id: str | None = None,
    ) -> None:
        if not functions:
            raise ValueError("functions: give at least one function")
        by_id: dict[str, Function] = {}
        for fn in functions:
            if not isinstance(fn, Function):
                raise TypeError(f"functions: {fn!r} is not a Function; decorate it with "
                                "@client.create_function")
            if fn.id in by_id:
                raise ValueError(f"functions: two functions have the id {fn.id!r}")
            by_id[fn.id] = fn
        if not 1 <= concurrency <= 100:
            raise ValueError("concurrency must be between 1 and 100")
        self.app_id = client.app_id
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.concurrency = concurrency
        self._functions = by_id
        self._connection: Connection = client.connection
        self._rpc_timeout = client.rpc_timeout
        self._shutdown_timeout = _seconds(shutdown_timeout, "shutdown_timeout")
        self._poll_wait_ms = max(1, min(60_000, int(_seconds(poll_wait, "poll_wait") * 1000)))
        self._metadata = self._connection.metadata()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._force_event: asyncio.Event | None = None
        self._slot_freed: asyncio.Event | None = None
        self._done: asyncio.Future[None] | None = None
        self._stop_requested = False
        self._signals = 0
        self._active: dict[asyncio.Task[None], RunExecution] = {}
        self._registered = False

    # -- public API ------------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True while the worker is connected and its functions are registered: events sent from now
        on start runs of them (an event only starts the functions registered when it arrives)."""
        return self._registered

    @property
    def in_flight(self) -> int:
        """How many runs this worker is executing now."""
        return len(self._active)

    @property
    def functions(self) -> list[Function]:
        """The functions this worker executes."""
        return list(self._functions.values())

    def run(self, *, event_loop: str = "auto") -> int:
        """Serves until SIGINT or SIGTERM, drains, and returns 0 (an exit code).

        Signal handlers are installed only on the main thread, and the previous ones are restored.
        Without any logging configuration, the SDK's INFO lines go to stderr: the worker's life
        (registered, reconnected, stopping) and every failure. A run's progress is at DEBUG: each
        line was a write on the way to the next step, and runs and their steps are in the
        orchestrator (`orchestrator runs show`, traces).

        `event_loop` is the loop the worker and the functions' coroutines run on: "uvloop",
        "asyncio" (the standard library's) or "auto": uvloop where it is installed (a dependency,
        but on Windows).
        """
        new_loop = loop_factory(event_loop)
        _default_logging()
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                runner.run(self.serve())
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    async def serve(self) -> None:
        """Registers, polls and executes runs until `stop()`; then drains. Raises only for errors that
        retrying cannot fix (e.g. INVALID_ARGUMENT on registration)."""
        if self._done is not None and not self._done.done():
            raise RuntimeError("this worker is already serving")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        self._force_event = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._done = loop.create_future()
        if self._stop_requested:
            self._stop_event.set()
        channel, stub = self._connection.aio_stub()
        logger.info("worker %s: serving app %r, functions %s, concurrency %d, target %s", self.worker_id,
                    self.app_id, sorted(self._functions), self.concurrency, self._connection.target)
        try:
            await self._poll_loop(stub, loop)
        except asyncio.CancelledError:
            # serve() itself was cancelled: no grace period, hand everything back at once.
            self._begin_stop(force=True)
            raise
        finally:
            self._begin_stop()
            await self._drain()
            self._registered = False
            await channel.close(grace=None)
            if not self._done.done():
                self._done.set_result(None)
            logger.info("worker %s: stopped", self.worker_id)

    async def stop(self) -> None:
        """Stops polling, lets in-flight runs finish for `shutdown_timeout`, hands back the rest, and
        returns when the worker has stopped. Idempotent."""
        self._begin_stop()
        if self._done is not None and not self._done.done():
            await asyncio.shield(self._done)

    # -- stopping --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs on the main thread between two bytecodes: only hand the request to the loop.
        self._signals += 1
        force = self._signals > 1
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._begin_stop, force, signal.Signals(signum).name)
        else:
            self._stop_requested = True

    def _begin_stop(self, force: bool = False, reason: str = "") -> None:
        first = not self._stop_requested or (self._stop_event is not None and not self._stop_event.is_set())
        self._stop_requested = True
        if self._stop_event is not None:
            self._stop_event.set()
        if first:
            logger.info("worker %s: stopping%s", self.worker_id, f" ({reason})" if reason else "")
        if force and self._force_event is not None:
            if not self._force_event.is_set():
                logger.info("worker %s: stopping now, without waiting for runs", self.worker_id)
            self._force_event.set()

    def _stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    async def _until_stop(self, awaitable: Awaitable[Any]) -> bool:
        """Waits for `awaitable` or the stop request; True when the awaitable finished (an unfinished
        one is cancelled)."""
        assert self._stop_event is not None
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})
        return not task.cancelled()

    async def _drain(self) -> None:
        if not self._active:
            return
        assert self._force_event is not None
        running = list(self._active)
        logger.info("worker %s: waiting up to %.0f s for %d run(s) in flight", self.worker_id,
                    self._shutdown_timeout, len(running))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._shutdown_timeout
        forced = asyncio.ensure_future(self._force_event.wait())
        try:
            pending = {task for task in running if not task.done()}
            while pending and not forced.done() and loop.time() < deadline:
                await asyncio.wait({*pending, forced}, timeout=deadline - loop.time(),
                                   return_when=asyncio.FIRST_COMPLETED)
                pending = {task for task in pending if not task.done()}
        finally:
            forced.cancel()
        left = {task: self._active[task] for task in running if not task.done() and task in self._active}
        for task, execution in left.items():
            execution.abandon("the worker is shutting down")
            task.cancel()
        if left:
            # Bounded: user code that swallows the cancellation must not keep the worker from stopping.
            await asyncio.wait(set(left), timeout=5)
            await asyncio.gather(*(execution.release() for execution in left.values()))

    # -- polling ---------------------------------------------------------------------------------

    async def _poll_loop(self, stub: Any, loop: asyncio.AbstractEventLoop) -> None:
        assert self._slot_freed is not None
        delays = backoff()
        outage = False
        while not self._stopping():
            if not self._registered:
                try:
                    if not await self._register(stub):
                        break
                except ClientError as error:
                    if isinstance(error, _FATAL_REGISTRATION):
                        raise
                    outage = await self._pause(delays, error, outage)
                    continue
                self._registered = True
                if outage:
                    logger.info("worker %s: reconnected to %s", self.worker_id, self._connection.target)
                outage, delays = False, backoff()
            free = self.concurrency - len(self._active)
            if free <= 0:
                self._slot_freed.clear()
                await self._until_stop(self._slot_freed.wait())
                continue
            try:
                items = await self._poll(stub, free)
            except ClientError as error:
                # The orchestrator may have restarted (and lost nothing, but our registration may be
                # older than its database): register again before the next poll.
                self._registered = False
                outage = await self._pause(delays, error, outage)
                continue
            delays = backoff()
            for item in items:
                self._start(item, stub, loop)
            if items:
                # Let the runs just started take their first slice (up to their first step's RPC)
                # before the next PollWork is built and sent: measured 0.06-0.22 ms sooner to the
                # first step's body, paired samples, both stores.
                await asyncio.sleep(0)

    async def _pause(self, delays: Any, error: ClientError, outage: bool) -> bool:
        delay: float = next(delays)
        level = logging.DEBUG if outage else logging.WARNING
        logger.log(level, "worker %s: orchestrator at %s not reachable (%s); retrying in %.1f s",
                   self.worker_id, self._connection.target, error, delay)
        await self._until_stop(asyncio.sleep(delay))
        return True

    async def _register(self, stub: Any) -> bool:
        """RegisterFunctions; False when a stop request interrupted it."""
        request = pb.RegisterFunctionsRequest(
            app_id=self.app_id,
            functions=[
                pb.FunctionConfig(
                    function_id=fn.id, triggers=[pb.Trigger(event=t.event) for t in fn.triggers],
                    retries=fn.retries,
                )
                for fn in self._functions.values()
            ],
        )
        call = asyncio.ensure_future(
            stub.RegisterFunctions(request, timeout=self._rpc_timeout, metadata=self._metadata)
        )
        if not await self._until_stop(call):
            return False
        try:
            call.result()
        except grpc.RpcError as exc:
            raise translate(exc) from None
        logger.info("worker %s: registered %d function(s) of app %r", self.worker_id, len(self._functions),
                    self.app_id)
        return True

    async def _poll(self, stub: Any, free: int) -> list[pb.WorkItem]:
        request = pb.PollWorkRequest(
            app_id=self.app_id, function_ids=sorted(self._functions), worker_id=self.worker_id,
            max_items=min(free, 100), max_wait_ms=self._poll_wait_ms,
        )
        # The deadline only bounds a poll on a dead connection; the server answers by max_wait itself.
        call = stub.PollWork(request, timeout=self._poll_wait_ms / 1000 + 15, metadata=self._metadata)
        poll: asyncio.Future[pb.PollWorkResponse] = asyncio.ensure_future(call)
        if not await self._until_stop(poll):
            return []
        try:
            reply = poll.result()
        except grpc.RpcError as exc:
            raise translate(exc) from None
        items = list(reply.items)
        if items and self._stopping():
            # Leased to us while we were asked to stop: hand them straight back.
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(self._execution(item, stub, loop).release() for item in items))
            return []
        return items

    # -- runs ------------------------------------------------------------------------------------

    def _execution(self, item: pb.WorkItem, stub: Any, loop: asyncio.AbstractEventLoop) -> RunExecution:
        return RunExecution(item, stub=stub, metadata=self._metadata, loop=loop,
                            rpc_timeout=self._rpc_timeout)

    def _start(self, item: pb.WorkItem, stub: Any, loop: asyncio.AbstractEventLoop) -> None:
        execution = self._execution(item, stub, loop)
        task = asyncio.create_task(self._execute(execution, item), name=f"sdk_python run {item.run_id}")
        self._active[task] = execution
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.pop(task, None)
        if self._slot_freed is not None:
            self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("worker %s: %s crashed", self.worker_id, task.get_name(), exc_info=task.exception())

    async def _execute(self, execution: RunExecution, item: pb.WorkItem) -> None:
        fn = self._functions.get(item.function_id)
        if fn is None:
            logger.error("run %s: function %r is not served by this worker; handing it back", item.run_id,
                         item.function_id)
            await execution.release()
            return
        runner = asyncio.current_task()
        assert runner is not None
        heartbeat = _Heartbeat(execution, runner)
        logger.debug("run %s: executing %s (attempt %d, %d step(s) recorded)", item.run_id, fn.id,
                     item.attempt, len(item.steps))
        try:
            request = await self._invoke(fn, execution, item)
            if request is not None:
                try:
                    await execution.complete(request)
                except RunFailing as failing:  # the return value was refused (e.g. too large)
                    request = _run_failed(failing.failure, request.started_unix_ms)
                    await execution.complete(request)
                _log_outcome(item.run_id, request)
        except RunStopped as stop:
            logger.info("run %s: execution ended (%s)", item.run_id, stop)
        finally:
            heartbeat.stop()

    async def _invoke(
        self, fn: Function, execution: RunExecution, item: pb.WorkItem
    ) -> pb.CompleteStepRequest | None:
        """Runs the handler; the completion to report, or None when the execution ended early."""
        event = event_from_pb(item.event)
        log = _RunLogger(logger, {"run_id": item.run_id})
        started = now_ms()
        try:
            if fn.is_async:
                ctx = Context(event=event, run_id=item.run_id, attempt=item.attempt, function_id=fn.id,
                              step=Step(execution), logger=log)
                result = await fn.handler(ctx)
            else:
                sync_ctx = ContextSync(event=event, run_id=item.run_id, attempt=item.attempt,
                                       function_id=fn.id, step=StepSync(execution), logger=log)
                result = await run_in_thread(execution.loop, fn.handler, sync_ctx,
                                             name=f"sdk_python run {item.run_id}")
            if inspect.isawaitable(result):
                result = await result
            execution.check_live()  # user code may have swallowed an interrupt
            execution.replay.check_finished()
            output = encode_json(result, "the function's return value")
        except RunStopped:
            return None
        except RunFailing as failing:
            return _run_failed(execution.failing or failing.failure, started)
        except (NonDeterminismError, NotSerialisableError) as exc:
            return _run_failed(final(exc), started)
        except Exception as exc:
            return _run_failed(execution.failing or classify(exc), started)
        return pb.CompleteStepRequest(run_completed=pb.RunCompleted(output_json=output),
                                      started_unix_ms=started, ended_unix_ms=now_ms())


class _Heartbeat:
    """Extends a run's lease every third of the lease while the run executes; a lost lease cancels
    the run's task. A timer until a beat is due, and a task only for the ExtendLease call: most
    runs end before their first beat, and starting a task per run (then its first step, then its
    cancellation) was a cost on the way to every run's first step."""

    def __init__(self, execution: RunExecution, runner: asyncio.Task[None]) -> None:
        # The lease length is estimated once, at hand-out, and clamped so a skewed clock can neither
        # flood the orchestrator with extensions nor let the lease lapse for long.
        lease_ms = min(max(execution.lease_remaining_ms(), 1_500), 300_000)
        self._interval = lease_ms / 3 / 1000
        self._execution = execution
        self._runner = runner
        self._loop = execution.loop
        self._beat: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(self._interval, self._due)

    def _due(self) -> None:
        self._timer = None
        self._beat = self._loop.create_task(self._extend(), name=f"sdk_python lease {self._execution.run_id}")

    async def _extend(self) -> None:
        await self._execution.extend_lease()
        self._beat = None
        if self._execution.abandoned is not None:
            self._runner.cancel()
            return
        self._timer = self._loop.call_later(self._interval, self._due)

    def stop(self) -> None:
        """No more beats; an ExtendLease in flight is cancelled."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._beat is not None:
            self._beat.cancel()
            self._beat = None


def _log_outcome(run_id: str, request: pb.CompleteStepRequest) -> None:
    if request.HasField("run_completed"):
        logger.debug("run %s: completed", run_id)
    else:
        failed = request.run_failed
        logger.info("run %s: failed (%s): %s: %s", run_id, "will be retried" if failed.retriable else "final",
                    failed.error.name, failed.error.message)


def _run_failed(failure: Failure, started: int) -> pb.CompleteStepRequest:
    return pb.CompleteStepRequest(
        run_failed=pb.RunFailed(error=error_to_pb(failure.error), retriable=failure.retriable,
                                retry_after_ms=failure.retry_after_ms),
        started_unix_ms=started, ended_unix_ms=now_ms(),
    )


def _seconds(value: timedelta | float, name: str) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"{name} must be a datetime.timedelta")


def _default_logging() -> None:
    """Shows the SDK's INFO lines on stderr when the program configured no logging at all."""
    sdk = logging.getLogger("sdk_python")
    if logging.getLogger().handlers or sdk.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    sdk.addHandler(handler)
    if sdk.level == logging.NOTSET:
        sdk.setLevel(logging.INFO)
