"""API keys against a real orchestrator: every RPC with no key, a wrong key and each role's key.

Missing or unknown keys are UNAUTHENTICATED; a known key beyond its role is PERMISSION_DENIED; a key
within its role reaches the RPC (an empty request then fails validation: INVALID_ARGUMENT proves the
call got past authentication). Keys come from the environment here (the flags are used by the
reflection test) and must never appear in the server's output.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from sdk_python import Client, Event, PermissionDeniedError, UnauthenticatedError
from sdk_python._proto.durable.v1 import orchestrator_pb2 as pb
from sdk_python._proto.durable.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support import ProcessGroup, base_env
from tests.support.secure import ConfiguredOrchestrator, bearer, channel, start_configured

EVENT_KEY = "ev-7f3a9c"
WORKER_KEYS = ("wk-one-81b2", "wk-two-c4d1")
ADMIN_KEY = "ad-5e6f0a"
WRONG_KEY = "not-a-configured-key"

# Each RPC with an empty request: enough to observe the authorization decision.
RPCS: dict[str, Any] = {
    "SendEvent": pb.SendEventRequest(),
    "RegisterFunctions": pb.RegisterFunctionsRequest(),
    "PollWork": pb.PollWorkRequest(),
    "CompleteStep": pb.CompleteStepRequest(),
    "ExtendLease": pb.ExtendLeaseRequest(),
    "ReleaseWork": pb.ReleaseWorkRequest(),
    "GetRun": pb.GetRunRequest(),
    "ListRuns": pb.ListRunsRequest(limit=1),
    "CancelRun": pb.CancelRunRequest(),
}
WORKER_RPCS = {"RegisterFunctions", "PollWork", "CompleteStep", "ExtendLease", "ReleaseWork", "SendEvent"}
ALLOWED = {
    EVENT_KEY: {"SendEvent"},
    WORKER_KEYS[0]: WORKER_RPCS,
    WORKER_KEYS[1]: WORKER_RPCS,
    ADMIN_KEY: set(RPCS),
}


@pytest.fixture
def server(tmp_path: Path, processes: ProcessGroup) -> ConfiguredOrchestrator:
    return start_configured(
        tmp_path,
        processes,
        env={
            "ORCHESTRATOR_EVENT_KEYS": EVENT_KEY,
            # Comma-separated, with a space: both worker keys are valid.
            "ORCHESTRATOR_WORKER_KEYS": f"{WORKER_KEYS[0]}, {WORKER_KEYS[1]}",
            "ORCHESTRATOR_ADMIN_KEYS": ADMIN_KEY,
        },
    )


def _code(stub: pb_grpc.OrchestratorStub, rpc: str, metadata: Any) -> grpc.StatusCode:
    try:
        getattr(stub, rpc)(RPCS[rpc], timeout=10, metadata=metadata)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_each_key_may_call_exactly_its_rights(server: ConfiguredOrchestrator) -> None:
    seen: dict[tuple[str, str], grpc.StatusCode] = {}
    with channel(server.target) as chan:
        stub = pb_grpc.OrchestratorStub(chan)
        for rpc in RPCS:
            for label, metadata in (
                ("none", ()),
                ("wrong", bearer(WRONG_KEY)),
                ("not bearer", (("authorization", f"Basic {ADMIN_KEY}"),)),
            ):
                seen[(label, rpc)] = _code(stub, rpc, metadata)
                assert seen[(label, rpc)] == grpc.StatusCode.UNAUTHENTICATED, (label, rpc)
            for key, allowed in ALLOWED.items():
                code = _code(stub, rpc, bearer(key))
                if rpc in allowed:
                    assert code not in (
                        grpc.StatusCode.UNAUTHENTICATED,
                        grpc.StatusCode.PERMISSION_DENIED,
                    ), (key, rpc, code)
                    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (key, rpc, code)
                else:
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (key, rpc, code)
    assert _logged_after_start(server).count("orchestrator listening") == 1
    for key in (EVENT_KEY, *WORKER_KEYS, ADMIN_KEY, WRONG_KEY):
        assert key not in _logged_after_start(server), f"key {key} leaked into the log"


def _logged_after_start(server: ConfiguredOrchestrator) -> str:
    return server.output_since_start()


def test_sdk_raises_typed_errors_and_the_admin_key_reads_runs(server: ConfiguredOrchestrator) -> None:
    clients: list[Client] = []

    def client(api_key: str | None) -> Client:
        made = Client("tests", server.target, api_key=api_key)
        clients.append(made)
        return made

    try:
        ids = client(EVENT_KEY).send_sync(Event(name="keys/ping", data={"n": 1}))
        assert len(ids) == 1
        with pytest.raises(PermissionDeniedError, match="event key may not call ListRuns"):
            client(EVENT_KEY).list_runs()
        with pytest.raises(UnauthenticatedError, match="missing"):
            client(None).send_sync(Event(name="keys/ping"))
        with pytest.raises(UnauthenticatedError, match="unknown API key"):
            client(WRONG_KEY).list_runs()
        assert client(ADMIN_KEY).list_runs() == []  # no function listens to keys/ping
    finally:
        for made in clients:
            made.close()


def _cli(server: ConfiguredOrchestrator, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--target", server.target],
        capture_output=True,
        text=True,
        timeout=60,
        env=base_env(),
    )


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (
            ("runs", "list", "--json", "--api-key", ADMIN_KEY),
            lambda r: r.returncode == 0 and r.stdout.strip() == "[]",
        ),
        (
            ("runs", "list", "--api-key", EVENT_KEY),
            lambda r: r.returncode == 1 and "PERMISSION_DENIED" in r.stderr,
        ),
        (("send", "keys/cli"), lambda r: r.returncode == 1 and "UNAUTHENTICATED" in r.stderr),
    ],
    ids=["admin-lists", "event-key-denied", "no-key"],
)
def test_cli_client_commands_send_the_api_key(
    server: ConfiguredOrchestrator,
    args: tuple[str, ...],
    check: Callable[[subprocess.CompletedProcess[str]], bool],
) -> None:
    result = _cli(server, *args)
    assert check(result), (result.returncode, result.stdout, result.stderr)
