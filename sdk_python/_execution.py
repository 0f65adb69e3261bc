"""One execution of one leased work item: the replay cursor, the lease, and reporting outcomes.

The step objects (`sdk_python.step`) and the worker share a `RunExecution`. Ending an execution early is
done with interrupts that subclass `BaseException`, so that a user's `except Exception` around a step
call cannot swallow them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import grpc

from sdk_python._failures import Failure, final
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._replay import Reached, Replay, decode_result
from sdk_python._rpc import backoff, translate
from sdk_python._threads import run_in_thread
from sdk_python._wire import now_ms
from sdk_python.errors import (
    FailedPreconditionError,
    NonDeterminismError,
    NotFoundError,
    UnavailableError,
)
from sdk_python.records import ErrorInfo, StepKind

T = TypeVar("T")

logger = logging.getLogger("sdk_python")

# After these a completion is sent again unchanged (the orchestrator answers a repeated completion
# exactly like the first, so repeating is safe whatever happened to the first one). UNAVAILABLE and
# DEADLINE_EXCEEDED (both `UnavailableError`) are repeated for as long as it takes: the orchestrator may be
# restarting. Server faults only a few times, so a persistent bug cannot keep a run leased forever.
_SERVER_FAULTS = frozenset({"INTERNAL", "UNKNOWN", "ABORTED"})
_SERVER_FAULT_ATTEMPTS = 8
# The outcome itself was refused (malformed, or larger than a message may be): sending it again cannot
# help, so the run fails with the reason instead.
_OUTCOME_REFUSED = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"})


class Interrupt(BaseException):
    """Ends the execution of a run from inside user code. Never seen by users unless they catch
    BaseException."""


class RunStopped(Interrupt):
    """The orchestrator said STOP (the run sleeps, waits, will be retried or is over) or the run was
    abandoned: nothing more to report."""


class RunFailing(Interrupt):
    """The run must fail with this failure, whatever the user code around the step does."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.error.message)
        self.failure = failure


class RunExecution:
    """State shared by the step objects and the worker while one work item executes."""

    def __init__(
        self,
        item: pb.WorkItem,
        *,
        stub: Any,
        metadata: tuple[tuple[str, str], ...],
        loop: asyncio.AbstractEventLoop,
        rpc_timeout: float,
    ) -> None:
        self.run_id = item.run_id
        self.function_id = item.function_id
        self.attempt = item.attempt
        # W3C trace context of the run's root span: step spans join the run's trace (sdk_python._tracing).
        self.traceparent = item.traceparent
        self.lease_id = item.lease_id
        self.lease_expires_ms = item.lease_expires_unix_ms
        self.replay = Replay.from_pb(item.steps)
        # Attempts lost with dead workers: the orchestrator charges them to this execution's first
        # outcome, so the first step.run attempt started here is numbered after them (see next_attempt).
        self._lost_attempts = item.lost_attempts
        self.loop = loop
        # Set once the run is no longer ours (lease lost, worker shutting down): every later step call
        # and completion stops the execution instead of talking to the orchestrator.
        self.abandoned: str | None = None
        # True once the orchestrator said STOP: the lease is gone, there is nothing to hand back, and
        # user code that swallowed the interrupt must not go on calling steps.
        self.ended = False
        # The failure the run must end with, kept here too in case user code swallows the interrupt.
        self.failing: Failure | None = None
        self._stub = stub
        self._metadata = metadata
        self._rpc_timeout = rpc_timeout
        self._bridged: set[concurrent.futures.Future[Any]] = set()

    # -- steps -----------------------------------------------------------------------------------

    def reach(self, user_id: str, kind: StepKind) -> Reached:
        """Resolves a step call against the memo; a mismatch fails the run, never silently."""
        self.check_live()
        try:
            reached = self.replay.reach(user_id, kind)
        except NonDeterminismError as exc:
            logger.error("run %s: %s", self.run_id, exc)
            raise self.fail(final(exc)) from None
        if reached.memo is not None and reached.memo.status == "failed":
            # A step that failed for good fails its run, so this run should not have been handed out.
            error = ErrorInfo(name="StepFailed", message=f"step {reached.step_id!r} already failed")
            raise self.fail(Failure(error=error, retriable=False))
        return reached

    def next_attempt(self, reached: Reached) -> int:
        """The number the orchestrator will record for the attempt of `reached` about to start (its
        step span's id derives from it): the step's failed attempts so far, plus, for the first
        attempt of this execution, the attempts lost with dead workers. Later attempts in place add
        one each."""
        lost, self._lost_attempts = self._lost_attempts, 0
        return (reached.memo.attempts if reached.memo is not None else 0) + lost

    def check_live(self) -> None:
        """Raises the interrupt that ends this execution if it has already been told to end."""
        if self.abandoned is not None:
            raise RunStopped(self.abandoned)
        if self.ended:
            raise RunStopped("the orchestrator already said stop")
        if self.failing is not None:
            raise RunFailing(self.failing)

    def fail(self, failure: Failure) -> RunFailing:
        """Records that the run must fail with `failure`; returns the interrupt to raise."""
        if self.failing is None:
            self.failing = failure
        return RunFailing(self.failing)

    def result(self, reached: Reached, reply: pb.CompleteStepResponse) -> Any:
        """A step's result from the reply to its completion, or the end of the execution on STOP."""
        proceed = reply.directive == pb.DIRECTIVE_CONTINUE
        if reached.kind != "run":  # step.run logs its own outcome, with its duration
            logger.debug("run %s: step %r (%s) %s", self.run_id, reached.step_id, reached.kind,
                         "done, continuing" if proceed else "recorded, run parked")
        if not proceed:
            raise RunStopped(f"stop after step {reached.step_id!r}")
        return decode_result(reached.kind, reply.output_json)

    async def call_user(self, handler: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Runs step code from the event loop: coroutine functions on the loop, plain functions in a
        thread (with the caller's contextvars) so the loop keeps the lease alive meanwhile."""
        if inspect.iscoroutinefunction(handler):
            result = await handler(*args)
        else:
            result = await run_in_thread(self.loop, handler, *args, name=f"sdk_python step {self.run_id}")
        if inspect.isawaitable(result):
            result = await result
        return result

    def call_user_sync(self, handler: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Runs step code from a sync handler's thread: plain functions right here, coroutine functions
        on the event loop."""
        result = handler(*args)
        if inspect.isawaitable(result):
            result = self.bridge(_as_coroutine(result))
        return result

    def bridge(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Runs `coroutine` on the event loop from a sync handler's thread and waits for its result."""
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:  # the loop is closed: the worker is gone
            coroutine.close()
            raise RunStopped("the worker stopped") from None
        self._bridged.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise RunStopped(self.abandoned or "cancelled") from None
        finally:
            self._bridged.discard(future)

    # -- lease and reporting -----------------------------------------------------------------------

    def abandon(self, reason: str) -> None:
        """Marks the run as no longer ours; pending bridged calls of a sync handler are cancelled."""
        if self.abandoned is None:
            self.abandoned = reason
        for future in list(self._bridged):
            future.cancel()

    async def complete(self, request: pb.CompleteStepRequest) -> pb.CompleteStepResponse:
        """Sends one outcome, repeating it unchanged while the orchestrator cannot be reached.

        FAILED_PRECONDITION / NOT_FOUND: the run is not ours any more, stop quietly. INVALID_ARGUMENT or
        RESOURCE_EXHAUSTED on an outcome other than a failure: the outcome itself is refused (e.g. too
        large), so the run fails with the reason.
        """
        request.run_id = self.run_id
        request.lease_id = self.lease_id
        # Whatever the first outcome is, it takes the lost attempts (a sleep, a wait, a send or the
        # run's end drops them): no later step attempt is numbered after them.
        self._lost_attempts = 0
        if self.ended:
            raise RunStopped("the orchestrator already said stop")
        delays = backoff()
        faults = 0
        while True:
            if self.abandoned is not None:
                raise RunStopped(self.abandoned)
            try:
                reply: pb.CompleteStepResponse = await self._stub.CompleteStep(
                    request, timeout=self._rpc_timeout, metadata=self._metadata
                )
            except grpc.RpcError as exc:
                error = translate(exc)
                if isinstance(error, FailedPreconditionError | NotFoundError):
                    self.abandon(f"{error.code}: {error.message}")
                    logger.warning("run %s: abandoned, the orchestrator says %s", self.run_id, error)
                    raise RunStopped(self.abandoned or "") from None
                if error.code in _OUTCOME_REFUSED and not request.HasField("run_failed"):
                    logger.error("run %s: outcome refused: %s", self.run_id, error)
                    raise self.fail(final(error)) from None
                faults += error.code in _SERVER_FAULTS
                if not isinstance(error, UnavailableError) and (
                    error.code not in _SERVER_FAULTS or faults >= _SERVER_FAULT_ATTEMPTS
                ):
                    self.abandon(str(error))
                    logger.error("run %s: abandoned, cannot report an outcome: %s", self.run_id, error)
                    raise RunStopped(str(error)) from None
                delay = next(delays)
                logger.warning("run %s: reporting failed (%s); again in %.1f s", self.run_id, error, delay)
                await asyncio.sleep(delay)
                continue
            if reply.directive == pb.DIRECTIVE_CONTINUE:
                if reply.lease_expires_unix_ms:
                    self.lease_expires_ms = reply.lease_expires_unix_ms
            else:
                self.ended = True
            return reply

    async def extend_lease(self) -> None:
        """Extends the lease once. Losing it abandons the run; an unreachable orchestrator is only
        logged (the next beat tries again, and a lost lease shows up as FAILED_PRECONDITION)."""
        request = pb.ExtendLeaseRequest(run_id=self.run_id, lease_id=self.lease_id)
        try:
            reply: pb.ExtendLeaseResponse = await self._stub.ExtendLease(
                request, timeout=self._rpc_timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            error = translate(exc)
            if isinstance(error, FailedPreconditionError | NotFoundError):
                self.abandon(f"lease lost: {error.message}")
                logger.warning("run %s: lease lost (%s); abandoning it", self.run_id, error.message)
            else:
                logger.warning("run %s: could not extend the lease: %s", self.run_id, error)
            return
        if reply.lease_expires_unix_ms:
            self.lease_expires_ms = reply.lease_expires_unix_ms

    async def release(self) -> None:
        """Hands the run back so another worker can take it at once; best effort."""
        if self.ended:
            return
        request = pb.ReleaseWorkRequest(run_id=self.run_id, lease_id=self.lease_id)
        try:
            await self._stub.ReleaseWork(request, timeout=min(self._rpc_timeout, 5.0),
                                         metadata=self._metadata)
        except grpc.RpcError as exc:
            error = translate(exc)
            if isinstance(error, FailedPreconditionError | NotFoundError):
                # The lease was already gone (expired, or the run ended): nothing left to hand back.
                logger.info("run %s: nothing to hand back (%s)", self.run_id, error.message)
            else:
                logger.warning("run %s: could not hand it back: %s", self.run_id, error)
        else:
            logger.info("run %s: handed back", self.run_id)

    def lease_remaining_ms(self) -> int:
        """Milliseconds until the lease expires by this machine's clock."""
        return self.lease_expires_ms - now_ms()


async def _as_coroutine(awaitable: Any) -> Any:
    return await awaitable
