"""API keys: who may call which RPC.

Three roles, each including the rights of the one before:

- ``event``: SendEvent only (what a web backend needs to start runs);
- ``worker``: also RegisterFunctions, PollWork, CompleteStep, ExtendLease, ReleaseWork;
- ``admin``: also GetRun, ListRuns, CancelRun (inspection and control).

Keys travel as ``authorization: Bearer <key>`` metadata. No key or an unknown key is UNAUTHENTICATED;
a known key calling beyond its role is PERMISSION_DENIED. With no keys configured the server is open.
Health and reflection stay open whatever the keys, so load balancers and grpcurl can probe.
Keys are compared with ``hmac.compare_digest`` against every configured key (no early exit) and are
never logged or echoed.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

SERVICE_PREFIX = "/durable.v1.Orchestrator/"


class Role(enum.IntEnum):
    """A key's role; a higher role has every right of the lower ones."""

    EVENT = 1
    WORKER = 2
    ADMIN = 3


# The least role allowed to call each RPC. A method missing here (a newer contract) needs ADMIN.
REQUIRED_ROLE: dict[str, Role] = {
    "SendEvent": Role.EVENT,
    "RegisterFunctions": Role.WORKER,
    "PollWork": Role.WORKER,
    "CompleteStep": Role.WORKER,
    "ExtendLease": Role.WORKER,
    "ReleaseWork": Role.WORKER,
    "GetRun": Role.ADMIN,
    "ListRuns": Role.ADMIN,
    "CancelRun": Role.ADMIN,
}


class Denied(Exception):
    """The call may not proceed; ``code`` is UNAUTHENTICATED or PERMISSION_DENIED."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class KeyRing:
    """The configured keys with their roles."""

    keys: tuple[tuple[bytes, Role], ...]

    @classmethod
    def of(cls, *, event: Sequence[str], worker: Sequence[str], admin: Sequence[str]) -> KeyRing:
        """Keys per role; a key listed under several roles gets the highest."""
        pairs = [(k, Role.EVENT) for k in event] + [(k, Role.WORKER) for k in worker]
        pairs += [(k, Role.ADMIN) for k in admin]
        return cls(tuple((k.encode(), role) for k, role in pairs))

    @property
    def open(self) -> bool:
        """True when no key is configured: every call is allowed."""
        return not self.keys

    def role_of(self, presented: bytes) -> Role | None:
        """The role of a presented key, or None. Compares with every key so timing says nothing."""
        found: Role | None = None
        for key, role in self.keys:
            if hmac.compare_digest(key, presented) and (found is None or role > found):
                found = role
        return found

    def check(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> None:
        """Raises ``Denied`` unless ``metadata`` carries a key allowed to call ``method`` (a full path)."""
        if self.open or not method.startswith(SERVICE_PREFIX):
            return
        rpc = method[len(SERVICE_PREFIX) :]
        token = bearer_token(metadata)
        if token is None:
            raise Denied(
                grpc.StatusCode.UNAUTHENTICATED,
                "authorization: missing; send the metadata 'authorization: Bearer <api key>'",
            )
        role = self.role_of(token)
        if role is None:
            raise Denied(grpc.StatusCode.UNAUTHENTICATED, "authorization: unknown API key")
        needed = REQUIRED_ROLE.get(rpc, Role.ADMIN)
        if role < needed:
            raise Denied(
                grpc.StatusCode.PERMISSION_DENIED,
                f"authorization: {_a(role)} key may not call {rpc} (needs {_a(needed)} key)",
            )


def _a(role: Role) -> str:
    name = role.name.lower()
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> bytes | None:
    """The token of the first ``authorization: Bearer ...`` entry, else None."""
    for name, value in metadata or ():
        if name.lower() != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip().encode()
        return None
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped here
    """Rejects Orchestrator calls whose key is missing, unknown or not allowed; passes the rest."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        try:
            self._ring.check(handler_call_details.method, handler_call_details.invocation_metadata)
        except Denied as denied:
            return _rejecting_handler(denied)
        return await continuation(handler_call_details)


def _rejecting_handler(denied: Denied) -> Any:
    async def reject(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(denied.code, denied.message)

    # No deserializer: the request stays raw bytes and is never parsed for a caller we refuse.
    return grpc.unary_unary_rpc_method_handler(reject)
