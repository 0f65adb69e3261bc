"""grpc's I/O engine default (sdk_python._transport): set before grpc is imported, never over a choice.

Each case runs in a fresh interpreter: grpc reads GRPC_EXPERIMENTS once, when it is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sdk_python._transport import ENV, POLL_ON_COMPLETION_QUEUE

# A round trip over grpc.aio in the child: the experiments are parsed when grpc starts, and a name
# grpc does not know (one a later grpcio dropped) is reported on stderr then.
ROUND_TRIP = """
import asyncio, os
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    await server.stop(None)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING

asyncio.run(main())
print(repr(os.environ.get("GRPC_EXPERIMENTS")))
"""


def _child(code: str, env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if env_value is not None:
        env[ENV] = env_value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          check=True)


@pytest.mark.parametrize("package", ["sdk_python", "orchestrator"])
def test_importing_the_package_first_turns_the_event_engine_experiments_off(package: str) -> None:
    done = _child(f"import {package}\n" + ROUND_TRIP, None)
    assert done.stdout.strip() == repr(POLL_ON_COMPLETION_QUEUE)
    # Every name is one this grpcio knows: nothing about experiments on stderr.
    assert "xperiment" not in done.stderr, done.stderr


def test_a_value_already_set_is_left_alone_even_empty() -> None:
    assert _child("import sdk_python\n" + ROUND_TRIP, "").stdout.strip() == repr("")
    chosen = "-event_engine_listener"
    assert _child("import sdk_python\n" + ROUND_TRIP, chosen).stdout.strip() == repr(chosen)


def test_nothing_is_set_once_grpc_is_imported() -> None:
    # grpc read the (absent) variable already; setting it now would reach only child processes.
    assert _child("import grpc\nimport sdk_python\n" + ROUND_TRIP, None).stdout.strip() == repr(None)
