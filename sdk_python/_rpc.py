"""gRPC plumbing: channels, call metadata, status translation and retries of safe calls.

Every call made by the SDK goes through `call_sync` or `call_async`, so no raw `grpc.RpcError` ever
reaches user code: it becomes a `ClientError` subclass carrying the status name and the server's message.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc
from sdk_python.errors import ClientError, UnavailableError, client_error_for

T = TypeVar("T")

# The generated stub class is untyped; every call on it is typed where its reply is used.
_new_stub: Callable[[Any], Any] = pb_grpc.OrchestratorStub

DEFAULT_TARGET = "localhost:50051"

# The channel's own reconnect backoff defaults to 1 s growing to 120 s: after an orchestrator restart a
# worker could then sit idle for minutes. Cap it at the same 5 s as our own retry loop.
_CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    # A target may list several orchestrator replicas (`ipv4:127.0.0.1:50051,127.0.0.1:50052`, or a DNS
    # name with several addresses): spread calls over all reachable ones, and skip one that is down.
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 5000),
    # A work item carries every memoized step output (each up to 4 MiB): the default 4 MiB limit on
    # received messages would make long runs impossible to hand out.
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


@dataclass(frozen=True)
class Connection:
    """Where the orchestrator is and how to reach it."""

    target: str
    api_key: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None

    @classmethod
    def from_env(
        cls, target: str | None, api_key: str | None, tls: bool | None, root_certificates: bytes | None
    ) -> Connection:
        """Explicit arguments first, then ORCHESTRATOR_TARGET, ORCHESTRATOR_API_KEY, ORCHESTRATOR_TLS_CA
        (a PEM file: TLS trusting that CA) and ORCHESTRATOR_TLS=1 (TLS trusting the system's roots)."""
        env = os.environ
        if root_certificates is None and env.get("ORCHESTRATOR_TLS_CA"):
            root_certificates = read_ca(env["ORCHESTRATOR_TLS_CA"])
        if tls is None:
            tls = root_certificates is not None or env.get("ORCHESTRATOR_TLS") == "1"
        return cls(
            target=target or env.get("ORCHESTRATOR_TARGET") or DEFAULT_TARGET,
            api_key=api_key if api_key is not None else env.get("ORCHESTRATOR_API_KEY") or None,
            tls=tls,
            root_certificates=root_certificates,
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent with every call."""
        if self.api_key:
            return (("authorization", f"Bearer {self.api_key}"),)
        return ()

    def sync_stub(self) -> tuple[Any, Any]:
        """A new blocking channel and its stub."""
        if self.tls:
            creds = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            channel = grpc.secure_channel(self.target, creds, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        return channel, _new_stub(channel)

    def aio_stub(self) -> tuple[Any, Any]:
        """A new asyncio channel, bound to the running event loop, and its stub."""
        if self.tls:
            creds = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
            channel = grpc.aio.secure_channel(self.target, creds, options=_CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        return channel, _new_stub(channel)


def read_ca(ca: str | os.PathLike[str] | bytes) -> bytes:
    """PEM bytes of a CA given as bytes, as PEM text, or as the path of a PEM file."""
    if isinstance(ca, bytes):
        return ca
    if isinstance(ca, str) and ca.lstrip().startswith("-----BEGIN"):
        return ca.encode()
    try:
        with open(ca, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise ValueError(f"tls_ca: cannot read {os.fspath(ca)!r}: {exc.strerror}") from None


def translate(error: grpc.RpcError) -> ClientError:
    """The `ClientError` for a failed call (grpc.RpcError and grpc.aio.AioRpcError alike)."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    name = code.name if code is not None else "UNKNOWN"
    return client_error_for(name, str(details or name))


def backoff(initial: float = 0.1, cap: float = 5.0) -> Iterator[float]:
    """Delays for retrying: `initial` seconds doubling up to `cap`, forever."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, cap)


def call_sync(call: Callable[[], T], *, attempts: int = 1) -> T:
    """Runs a blocking call, translating failures; retries UNAVAILABLE up to `attempts` tries in all.
    Only pass attempts > 1 for calls that are safe to repeat."""
    delays = backoff()
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except grpc.RpcError as exc:
            error = translate(exc)
            if not isinstance(error, UnavailableError) or attempt == attempts:
                raise error from None
        time.sleep(next(delays))
    raise AssertionError("unreachable")


async def call_async(call: Callable[[], Awaitable[T]], *, attempts: int = 1) -> T:
    """The asyncio twin of `call_sync`."""
    delays = backoff()
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except grpc.RpcError as exc:
            error = translate(exc)
            if not isinstance(error, UnavailableError) or attempt == attempts:
                raise error from None
        await asyncio.sleep(next(delays))
    raise AssertionError("unreachable")
