"""The client: declares functions, sends events, inspects and cancels runs, and builds workers.

Blocking calls (`send_sync`, `get_run`, `list_runs`, `cancel_run`) share one channel, created on first use.
`await send(...)` uses an asyncio channel bound to the running event loop (a new loop gets a new one).
Every RPC failure is raised as a `sdk_python.errors.ClientError` subclass.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._rpc import Connection, call_async, call_sync, read_ca
from sdk_python._wire import event_to_pb, run_from_pb, run_status_to_pb, stamp_event
from sdk_python.function import DEFAULT_RETRIES, AsyncHandler, Function, SyncHandler, TriggerEvent
from sdk_python.records import Event, Run
from sdk_python.worker import Worker

__all__ = ["Client"]

# A send is safe to repeat (the events carry their ids), so a short outage is ridden out.
_SEND_ATTEMPTS = 5
_READ_ATTEMPTS = 3


class Client:
    """Talks to one orchestrator on behalf of one app.

    `target` is "host:port"; by default `$ORCHESTRATOR_TARGET`, else "localhost:50051". `api_key`
    (default `$ORCHESTRATOR_API_KEY`) is sent as `authorization: Bearer <key>`. TLS is used when
    `tls=True` (trusting the system's roots), when `tls_ca` is given (the CA to trust: a PEM file path
    or PEM bytes; `root_certificates` is the same as bytes), or from `$ORCHESTRATOR_TLS_CA` (a path) /
    `$ORCHESTRATOR_TLS=1`.
    `rpc_timeout` bounds each call.
    """

    def __init__(
        self,
        app_id: str,
        target: str | None = None,
        *,
        api_key: str | None = None,
        tls: bool | None = None,
        tls_ca: str | os.PathLike[str] | bytes | None = None,
        root_certificates: bytes | None = None,
        rpc_timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        if not isinstance(app_id, str) or not app_id:
            raise ValueError("app_id must be a non-empty string")
        self.app_id = app_id
        if tls_ca is not None and root_certificates is None:
            root_certificates = read_ca(tls_ca)
        self.connection = Connection.from_env(target, api_key, tls, root_certificates)
        self.rpc_timeout = rpc_timeout.total_seconds()
        self._metadata = self.connection.metadata()
        self._lock = threading.Lock()
        self._sync: tuple[Any, Any] | None = None
        self._aio: tuple[asyncio.AbstractEventLoop, Any, Any] | None = None

    @property
    def target(self) -> str:
        """The orchestrator's address."""
        return self.connection.target

    def __repr__(self) -> str:
        return f"Client(app_id={self.app_id!r}, target={self.target!r})"

    # -- functions and workers -------------------------------------------------------------------

    def create_function(
        self,
        *,
        fn_id: str,
        trigger: TriggerEvent | Sequence[TriggerEvent],
        retries: int = DEFAULT_RETRIES,
    ) -> Callable[[AsyncHandler | SyncHandler], Function]:
        """Decorates `async def f(ctx)` or `def f(ctx)` into a `Function` started by `trigger`.

        A failed step is retried `retries` times (so `retries + 1` attempts) before the run fails.
        """

        def decorate(handler: AsyncHandler | SyncHandler) -> Function:
            return Function.declare(handler, fn_id=fn_id, trigger=trigger, retries=retries)

        # Validate now, at import time of the user's module, rather than at the first decoration.
        Function.declare(_placeholder, fn_id=fn_id, trigger=trigger, retries=retries)
        return decorate

    def worker(
        self,
        functions: Sequence[Function],
        *,
        concurrency: int = 10,
        shutdown_timeout: timedelta = timedelta(seconds=10),
        poll_wait: timedelta = timedelta(seconds=30),
        worker_id: str | None = None,
    ) -> Worker:
        """A worker executing runs of `functions`, at most `concurrency` at a time."""
        return Worker(self, functions=functions, concurrency=concurrency, shutdown_timeout=shutdown_timeout,
                      poll_wait=poll_wait, worker_id=worker_id)

    # -- events ----------------------------------------------------------------------------------

    async def send(self, events: Event | Sequence[Event]) -> list[str]:
        """Sends one event or a list of events; returns their ids, in order. Events without an id get
        one first, so the retries made on UNAVAILABLE cannot ingest an event twice."""
        request = _send_request(events)
        if not request.events:
            return []
        stub = self._aio_stub()
        reply: pb.SendEventResponse = await call_async(
            lambda: stub.SendEvent(request, timeout=self.rpc_timeout, metadata=self._metadata),
            attempts=_SEND_ATTEMPTS,
        )
        return list(reply.ids)

    def send_sync(self, events: Event | Sequence[Event]) -> list[str]:
        """The blocking form of `send`."""
        request = _send_request(events)
        if not request.events:
            return []
        stub = self._sync_stub()
        reply: pb.SendEventResponse = call_sync(
            lambda: stub.SendEvent(request, timeout=self.rpc_timeout, metadata=self._metadata),
            attempts=_SEND_ATTEMPTS,
        )
        return list(reply.ids)

    # -- inspection ------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        """One run with all its steps; `NotFoundError` when there is none."""
        stub = self._sync_stub()
        reply: pb.GetRunResponse = call_sync(
            lambda: stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=self.rpc_timeout,
                                metadata=self._metadata),
            attempts=_READ_ATTEMPTS,
        )
        return run_from_pb(reply.run)

    def list_runs(
        self,
        function_id: str | None = None,
        status: str | None = None,
        event_id: str | None = None,
        *,
        app_id: str | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs with their steps, newest first, filtered by function id, status ("running",
        "completed", "failed", "cancelled"), triggering event id and app id (default: every app)."""
        request = pb.ListRunsRequest(
            function_id=function_id or "",
            status=run_status_to_pb(status) if status else pb.RUN_STATUS_UNSPECIFIED,
            event_id=event_id or "",
            app_id=app_id or "",
            limit=limit,
            include_steps=True,
        )
        stub = self._sync_stub()
        reply: pb.ListRunsResponse = call_sync(
            lambda: stub.ListRuns(request, timeout=self.rpc_timeout, metadata=self._metadata),
            attempts=_READ_ATTEMPTS,
        )
        return [run_from_pb(run) for run in reply.runs]

    def cancel_run(self, run_id: str) -> Run:
        """Cancels a run that has not ended and returns it; `FailedPreconditionError` if it has ended.
        Not retried: a lost reply would turn a retry into a misleading FAILED_PRECONDITION."""
        stub = self._sync_stub()
        reply: pb.CancelRunResponse = call_sync(
            lambda: stub.CancelRun(pb.CancelRunRequest(run_id=run_id), timeout=self.rpc_timeout,
                                   metadata=self._metadata)
        )
        return run_from_pb(reply.run)

    # -- channels --------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the blocking channel (the asyncio one closes with its event loop). The client can be
        used again afterwards: a new channel is made on demand."""
        with self._lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync[0].close()

    def _sync_stub(self) -> Any:
        with self._lock:
            if self._sync is None:
                self._sync = self.connection.sync_stub()
            return self._sync[1]

    def _aio_stub(self) -> Any:
        loop = asyncio.get_running_loop()
        aio = self._aio
        if aio is None or aio[0] is not loop or loop.is_closed():
            # A grpc.aio channel belongs to the loop it was made on; one per loop, the latest kept.
            channel, stub = self.connection.aio_stub()
            self._aio = aio = (loop, channel, stub)
        return aio[2]


def _send_request(events: Event | Sequence[Event]) -> pb.SendEventRequest:
    batch = [events] if isinstance(events, Event) else list(events)
    return pb.SendEventRequest(events=[event_to_pb(stamp_event(event)) for event in batch])


def _placeholder(ctx: Any) -> None:
    return None
