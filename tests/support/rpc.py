"""Raw gRPC access for tests that speak the wire contract directly (no SDK in between)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc

RPC_TIMEOUT = 30.0


@contextmanager
def raw_stub(target: str) -> Iterator[pb_grpc.OrchestratorStub]:
    """A stub on a fresh insecure channel to `target`, closed on exit."""
    with grpc.insecure_channel(target) as channel:
        yield pb_grpc.OrchestratorStub(channel)


@dataclass(frozen=True)
class FunctionSpec:
    """A function declaration as a worker registers it."""

    function_id: str
    event: str
    retries: int | None = None

    def to_proto(self) -> pb.FunctionConfig:
        """The wire form."""
        config = pb.FunctionConfig(function_id=self.function_id, triggers=[pb.Trigger(event=self.event)])
        if self.retries is not None:
            config.retries = self.retries
        return config


def register_functions(target: str, app_id: str, functions: Sequence[FunctionSpec]) -> None:
    """Registers functions exactly as a worker of `app_id` would (re-registering is idempotent)."""
    with raw_stub(target) as stub:
        stub.RegisterFunctions(
            pb.RegisterFunctionsRequest(app_id=app_id, functions=[f.to_proto() for f in functions]),
            timeout=RPC_TIMEOUT,
        )
