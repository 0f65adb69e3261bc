"""Orchestrators started with keys, TLS or limits, and the test certificates they serve.

`generate_tls(dir)` writes a throwaway CA and a server certificate for 127.0.0.1/localhost signed by it.
`start_configured(tmp_path, processes, *flags, tls=None)` runs `orchestrator serve` with extra flags and
waits on the standard health service (open whatever the keys), over TLS when `tls` is given.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.processes import (
    STARTUP_TIMEOUT,
    OrchestratorProcess,
    ProcessFailed,
    ProcessGroup,
    base_env,
    free_port,
    orchestrator_command,
)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA clients trust, and the server's certificate and key."""

    ca: Path
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate valid for 127.0.0.1 and localhost, written under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("orchestrator test CA"))
        .issuer_name(_name("orchestrator test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server-key.pem")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@contextmanager
def channel(target: str, tls: TlsFiles | None = None) -> Iterator[grpc.Channel]:
    """A blocking channel to `target`, TLS trusting the test CA when `tls` is given."""
    if tls is None:
        with grpc.insecure_channel(target) as plain:
            yield plain
        return
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca.read_bytes())
    with grpc.secure_channel(target, creds) as secure:
        yield secure


class ConfiguredOrchestrator(OrchestratorProcess):
    """An orchestrator whose readiness is the health service saying SERVING (keys do not apply)."""

    tls: TlsFiles | None = None

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        with channel(self.target, self.tls) as chan:
            stub = health_pb2_grpc.HealthStub(chan)
            while time.monotonic() < deadline:
                if not self.is_running():
                    raise ProcessFailed(f"{self.name} exited with {self.returncode}\n{self.logs()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last_error = f"status {reply.status}"
                except grpc.RpcError as exc:
                    last_error = f"{exc.code().name}: {exc.details()}"
                time.sleep(0.1)
        raise ProcessFailed(f"{self.name} not healthy within {timeout}s ({last_error})\n{self.logs()}")


def start_configured(
    tmp_path: Path,
    processes: ProcessGroup,
    *flags: str,
    tls: TlsFiles | None = None,
    name: str = "orchestrator",
    env: dict[str, str] | None = None,
) -> ConfiguredOrchestrator:
    """`orchestrator serve` on a free port and a fresh SQLite file, with `flags` (and TLS files)."""
    workdir = tmp_path / name
    workdir.mkdir()
    port = free_port()
    command = orchestrator_command(port, f"sqlite:///{workdir / 'orch.db'}") + list(flags)
    if tls is not None:
        command += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    process = ConfiguredOrchestrator(
        command=command,
        log_path=workdir / "orchestrator.log",
        env=base_env({"ORCHESTRATOR_DATA_DIR": str(workdir / "data"), **(env or {})}),
        target=f"127.0.0.1:{port}",
        cwd=workdir,
        name=name,
    )
    process.tls = tls
    processes.add(process)
    process.start()
    return process


def bearer(key: str) -> Sequence[tuple[str, str]]:
    """Call metadata carrying `key`."""
    return (("authorization", f"Bearer {key}"),)
