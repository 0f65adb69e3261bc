"""TLS on and off, with a certificate the test generates: the Python SDK sends events and a Python
worker (configured only through ORCHESTRATOR_TLS_CA and ORCHESTRATOR_API_KEY) completes a run; a client
that does not speak TLS, or does not trust the CA, cannot connect; a plaintext server still serves
plaintext clients and refuses TLS ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from sdk_python import Client, Event, UnavailableError
from tests.support import ProcessGroup, StartWorker, wait_until
from tests.support.secure import TlsFiles, generate_tls, start_configured

WORKER_KEY = "tls-worker-key"
ADMIN_KEY = "tls-admin-key"
RUN_TIMEOUT = 60.0
# A refused handshake is retried by the channel until the deadline: keep it short.
SHORT = timedelta(seconds=5)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return generate_tls(tmp_path / "tls")


def test_sdk_and_worker_over_tls_with_keys(
    tmp_path: Path, processes: ProcessGroup, tls: TlsFiles, start_worker: StartWorker
) -> None:
    server = start_configured(
        tmp_path, processes, "--worker-key", WORKER_KEY, "--admin-key", ADMIN_KEY, tls=tls
    )
    assert "tls=on" in server.output_since_start()
    worker = start_worker(
        "extras",
        server,
        env={"ORCHESTRATOR_TLS_CA": str(tls.ca), "ORCHESTRATOR_API_KEY": WORKER_KEY},
    )
    # Registered over TLS with the worker key: only then does an event start a run.
    worker.wait_for_log("registered 2 function(s)")
    admin = Client("tests", server.target, api_key=ADMIN_KEY, tls_ca=tls.ca.read_bytes())
    sender = Client("tests", server.target, api_key=WORKER_KEY, tls_ca=str(tls.ca))
    try:
        (event_id,) = sender.send_sync(Event(name="extras/greet", data={"name": "ada"}))
        run = wait_until(
            lambda: next((r for r in admin.list_runs(event_id=event_id) if r.status != "running"), None),
            timeout=RUN_TIMEOUT,
            message=lambda: f"the run of {event_id} to end; worker log:\n{worker.logs()}",
        )
        assert run.status == "completed", run.error
        assert run.output == {"greeting": "Hello, ada!", "delivered": 2}
    finally:
        admin.close()
        sender.close()


def test_tls_server_refuses_plaintext_and_untrusting_clients(
    tmp_path: Path, processes: ProcessGroup, tls: TlsFiles
) -> None:
    server = start_configured(tmp_path, processes, tls=tls)
    plaintext = Client("tests", server.target, tls=False, rpc_timeout=SHORT)
    system_roots = Client("tests", server.target, tls=True, rpc_timeout=SHORT)
    try:
        for client in (plaintext, system_roots):
            with pytest.raises(UnavailableError):
                client.list_runs()
    finally:
        plaintext.close()
        system_roots.close()


def test_plaintext_server_serves_plaintext_and_refuses_tls(
    tmp_path: Path, processes: ProcessGroup, tls: TlsFiles
) -> None:
    server = start_configured(tmp_path, processes)
    # No keys configured: open, and said so once at start.
    assert server.output_since_start().count("no API keys configured") == 1
    assert "tls=off" in server.output_since_start()
    plaintext = Client("tests", server.target)
    over_tls = Client("tests", server.target, tls_ca=tls.ca, rpc_timeout=SHORT)
    try:
        assert plaintext.list_runs() == []
        with pytest.raises(UnavailableError):
            over_tls.list_runs()
    finally:
        plaintext.close()
        over_tls.close()
