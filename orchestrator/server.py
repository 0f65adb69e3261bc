"""The orchestrator process: opens the store, serves gRPC, runs the timers, drains on shutdown.

``run(settings)`` blocks until SIGTERM/SIGINT and returns the exit code; ``serve(settings, stop)``
is the same for asyncio programs and tests; ``OrchestratorServer`` gives finer control (the bound
port when ``settings.port`` is 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import sys
from collections.abc import Callable
from datetime import timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from orchestrator import errors, eventloop, logs
from orchestrator.api import auth, decode, servicer
from orchestrator.config import Settings
from orchestrator.engine import limits
from orchestrator.service import Orchestrator
from orchestrator.store import factory
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb

logger = logging.getLogger("orchestrator.server")

# In-flight RPCs get this long to finish after a shutdown request; parked long polls end at once.
DRAIN_GRACE = timedelta(seconds=5)

# The default; ``Settings.max_message_bytes`` is what a server uses. It always exceeds the largest
# output and event by an envelope, so an oversized payload gets our message naming the field.
MAX_MESSAGE_BYTES = limits.DEFAULT_MAX_MESSAGE_BYTES
ORCHESTRATOR_SERVICE = pb.DESCRIPTOR.services_by_name["Orchestrator"].full_name


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class OrchestratorServer:
    """One orchestrator: store, facade, scheduler task and gRPC server, started and stopped together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port: int | None = None
        self._orchestrator: Orchestrator | None = None
        self._grpc: grpc.aio.Server | None = None
        self._scheduler_stop = asyncio.Event()
        self._scheduler_task: asyncio.Task[None] | None = None
        self._health: health.aio.HealthServicer | None = None

    @property
    def orchestrator(self) -> Orchestrator:
        """The facade (after ``start``)."""
        if self._orchestrator is None:
            raise RuntimeError("server not started")
        return self._orchestrator

    async def start(self) -> int:
        """Opens the database, binds the port and starts serving; returns the bound port."""
        loop = asyncio.get_running_loop()
        # Opening the store applies migrations: blocking I/O, off the loop.
        store = await loop.run_in_executor(
            None,
            functools.partial(
                factory.open_store,
                self.settings.db_url,
                create_schema=self.settings.migrate,
                pool_size=self.settings.db_pool_size,
            ),
        )
        self._orchestrator = Orchestrator(store, self.settings)
        try:
            credentials = _server_credentials(self.settings)
        except errors.ConfigError:
            await self._orchestrator.close()
            raise
        ring = auth.KeyRing.of(
            event=self.settings.event_keys, worker=self.settings.worker_keys, admin=self.settings.admin_keys
        )
        if ring.open:
            logs.log_at(
                logger,
                logging.WARNING,
                "auth.open",
                message="no API keys configured: any client may call every RPC (see --admin-key)",
            )
        max_bytes = self.settings.max_message_bytes
        # No keys: no auth interceptor at all (each one costs every call a coroutine, about 0.02 ms).
        interceptors = [] if ring.open else [auth.AuthInterceptor(ring)]
        server = grpc.aio.server(
            interceptors=[*interceptors, decode.DecodeInterceptor()],
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                # Work items carry memoized outputs: let them be larger than any one request.
                ("grpc.max_send_message_length", max(max_bytes, MAX_MESSAGE_BYTES)),
                ("grpc.so_reuseport", 0),
            ],
        )
        servicer.add_to_server(server, self._orchestrator, self.settings.limits)
        self._health = _add_health_and_reflection(server)
        address = _bind_address(self.settings.host, self.settings.port)
        try:
            if credentials is None:
                port: int = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            await self._orchestrator.close()
            raise errors.ConfigError(f"cannot listen on {address}: {exc}") from exc
        if port == 0:
            await self._orchestrator.close()
            raise errors.ConfigError(f"cannot listen on {address}")
        await server.start()
        await self._health.set(ORCHESTRATOR_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._grpc = server
        self.port = port
        self._scheduler_task = asyncio.create_task(
            self._orchestrator.scheduler.run(self._scheduler_stop), name="orchestrator-scheduler"
        )
        self._scheduler_task.add_done_callback(_report_crash)
        self._orchestrator.start_listening()
        # Written directly (not through logging) so it appears whatever the log level: scripts and
        # tests wait for this line to know the orchestrator is ready.
        print(
            f"orchestrator listening on {self.settings.host}:{port} db={store.display_url}"
            f" tls={'on' if credentials is not None else 'off'} loop={eventloop.name_of(loop)}",
            file=sys.stderr,
            flush=True,
        )
        return port

    async def stop(self, grace: timedelta = DRAIN_GRACE) -> None:
        """Stops accepting, lets in-flight RPCs finish (parked polls end empty), then closes."""
        if self._orchestrator is None:
            return
        logs.log(logger, "server.stopping", grace_s=grace.total_seconds())
        self._orchestrator.begin_shutdown()
        if self._health is not None:
            # Load balancers see NOT_SERVING while in-flight calls drain.
            await self._health.enter_graceful_shutdown()
        if self._grpc is not None:
            await self._grpc.stop(grace.total_seconds())
        self._scheduler_stop.set()
        if self._scheduler_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler_task
        await self._orchestrator.close()
        self._orchestrator = None
        logs.log(logger, "server.stopped")


def _server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the PEM files in the settings, or None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    try:
        with open(settings.tls_cert, "rb") as cert, open(settings.tls_key, "rb") as key:
            pair = (key.read(), cert.read())
    except OSError as exc:
        raise errors.ConfigError(f"tls: cannot read {exc.filename}: {exc.strerror}") from exc
    return grpc.ssl_server_credentials([pair])


def _add_health_and_reflection(server: grpc.aio.Server) -> health.aio.HealthServicer:
    """The standard health service and server reflection (both open, see orchestrator.api.auth)."""
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = (
        ORCHESTRATOR_SERVICE,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    return checker


def _report_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("scheduler task crashed", exc_info=task.exception())


async def serve(
    settings: Settings, stop: asyncio.Event, *, on_ready: Callable[[int], None] | None = None
) -> None:
    """Serves until ``stop`` is set, then drains. ``on_ready`` receives the bound port."""
    server = OrchestratorServer(settings)
    await server.start()
    try:
        if on_ready is not None:
            on_ready(server.port or settings.port)
        await stop.wait()
    finally:
        await server.stop()


def run(settings: Settings) -> int:
    """Serves until SIGTERM or SIGINT, drains, and returns the process exit code (0 on a clean stop)."""
    logs.configure(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=eventloop.factory(settings.event_loop)) as runner:
            runner.run(_main(settings))
    except errors.OrchestratorError as exc:
        logs.log_at(logger, logging.ERROR, "server.failed", error=exc.message)
        return 1
    return 0


async def _main(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, _on_signal, stop, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
    try:
        await serve(settings, stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    if stop.is_set():
        return
    logs.log(logger, "server.signal", signal=sig.name)
    stop.set()
