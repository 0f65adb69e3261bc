"""API key checks (orchestrator.api.auth) and the security and limit settings, without a server."""

from __future__ import annotations

import grpc
import pytest

from orchestrator import errors
from orchestrator.api import auth
from orchestrator.config import Settings, split_keys

RING = auth.KeyRing.of(event=["ev"], worker=["wk"], admin=["ad", "wk"])


def _denied(method: str, metadata: list[tuple[str, str]]) -> grpc.StatusCode | None:
    try:
        RING.check(f"/durable.v1.Orchestrator/{method}", metadata)
    except auth.Denied as denied:
        return denied.code
    return None


@pytest.mark.parametrize(
    ("metadata", "method", "expected"),
    [
        ([], "SendEvent", grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Bearer nope")], "SendEvent", grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Basic ev")], "SendEvent", grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "Bearer ")], "SendEvent", grpc.StatusCode.UNAUTHENTICATED),
        ([("authorization", "bearer ev")], "SendEvent", None),
        ([("authorization", "Bearer ev")], "PollWork", grpc.StatusCode.PERMISSION_DENIED),
        ([("authorization", "Bearer ev")], "FutureMethod", grpc.StatusCode.PERMISSION_DENIED),
        ([("authorization", "Bearer ad")], "FutureMethod", None),
        # Listed as worker and admin: the higher role wins.
        ([("authorization", "Bearer wk")], "CancelRun", None),
    ],
)
def test_ring_decisions(
    metadata: list[tuple[str, str]], method: str, expected: grpc.StatusCode | None
) -> None:
    assert _denied(method, metadata) == expected


def test_open_ring_and_other_services_need_no_key() -> None:
    assert auth.KeyRing.of(event=[], worker=[], admin=[]).open
    RING.check("/grpc.health.v1.Health/Check", [])
    RING.check("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", [])


def test_denial_messages_never_contain_the_key() -> None:
    with pytest.raises(auth.Denied) as denied:
        RING.check("/durable.v1.Orchestrator/GetRun", [("authorization", "Bearer ev")])
    assert denied.value.message == "authorization: an event key may not call GetRun (needs an admin key)"
    with pytest.raises(auth.Denied) as unknown:
        RING.check("/durable.v1.Orchestrator/GetRun", [("authorization", "Bearer secret-guess")])
    assert "secret-guess" not in unknown.value.message


def test_keys_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert split_keys(["a,b", " c ", ""]) == ("a", "b", "c")
    monkeypatch.setenv("ORCHESTRATOR_WORKER_KEYS", "w1, w2")
    settings = Settings.from_env(admin_keys=("x",))
    assert (settings.worker_keys, settings.admin_keys, settings.event_keys) == (("w1", "w2"), ("x",), ())


def test_invalid_security_settings_are_config_errors() -> None:
    with pytest.raises(errors.ConfigError, match="tls_cert and tls_key"):
        Settings(tls_cert="cert.pem")
    with pytest.raises(errors.ConfigError, match="max_event_bytes: must be positive"):
        Settings(max_event_bytes=0)
    with pytest.raises(errors.ConfigError, match="max_message_bytes"):
        Settings(max_message_bytes=4 * 1024 * 1024)
    assert Settings().limits.max_event_bytes == 256 * 1024
