"""Settings of the orchestrator process, from the environment and explicit overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator import errors
from orchestrator.engine import limits as lim
from sdk_python._loops import EVENT_LOOPS

DEFAULT_DB_FILE = "orchestrator.db"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def default_data_dir() -> Path:
    """The data folder: ``$ORCHESTRATOR_DATA_DIR`` or ``./.orchestrator``."""
    return Path(os.environ.get("ORCHESTRATOR_DATA_DIR") or ".orchestrator")


def default_db_url() -> str:
    """A SQLite file in the data folder (the folder is created when the store opens)."""
    return f"sqlite:///{default_data_dir() / DEFAULT_DB_FILE}"


def normalize_db_url(url: str) -> str:
    """Accepts any SQLAlchemy URL; a bare ``postgresql://`` gets the psycopg 3 driver we ship."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@dataclass(frozen=True)
class Settings:
    """Everything the orchestrator process needs to start."""

    host: str = "127.0.0.1"
    port: int = 50051
    db_url: str = field(default_factory=default_db_url)
    lease_seconds: float = 30.0
    poll_max_wait_seconds: float = 30.0
    log_level: str = "INFO"
    # "auto": uvloop where it is installed (a dependency everywhere but Windows), else asyncio's own.
    event_loop: str = "auto"
    # Apply pending schema migrations at start (``serve --no-migrate``: only check the revision).
    migrate: bool = True
    # PostgreSQL connections (and store threads) per process; None: the dialect's default (8).
    db_pool_size: int | None = None
    # The longest the timer task sleeps between scans when no nearer deadline is known (deadlines
    # created by another replica are found at the latest this late).
    timer_scan_seconds: float = 1.0
    # API keys by role (see orchestrator.api.auth); none at all means the server runs open.
    event_keys: tuple[str, ...] = ()
    worker_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    # PEM files; both or neither. With them the port speaks TLS only.
    tls_cert: str | None = None
    tls_key: str | None = None
    max_event_bytes: int = lim.MAX_EVENT_BYTES
    max_batch_events: int = lim.MAX_EVENTS_PER_REQUEST
    max_output_bytes: int = lim.MAX_JSON_BYTES
    max_steps_per_run: int = lim.MAX_STEPS_PER_RUN
    max_message_bytes: int = lim.DEFAULT_MAX_MESSAGE_BYTES

    @property
    def limits(self) -> lim.Limits:
        """The request and run limits these settings configure."""
        return lim.Limits(
            max_event_bytes=self.max_event_bytes,
            max_batch_events=self.max_batch_events,
            max_output_bytes=self.max_output_bytes,
            max_steps_per_run=self.max_steps_per_run,
            max_message_bytes=self.max_message_bytes,
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "db_url", normalize_db_url(self.db_url))
        for role in ("event_keys", "worker_keys", "admin_keys"):
            keys = tuple(getattr(self, role))
            object.__setattr__(self, role, keys)
            if any(not key or key != key.strip() or "," in key for key in keys):
                raise errors.ConfigError(f"{role}: keys must be non-empty, without commas or spaces around")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise errors.ConfigError("tls_cert and tls_key: give both (PEM files) or neither")
        problems = self.limits.problems()
        if problems:
            raise errors.ConfigError("; ".join(problems))
        if not 0 <= self.port <= 65535:
            raise errors.ConfigError(f"port: must be between 0 and 65535, got {self.port}")
        if self.lease_seconds <= 0:
            raise errors.ConfigError(f"lease_seconds: must be positive, got {self.lease_seconds}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise errors.ConfigError(
                f"log_level: must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
        if self.event_loop not in EVENT_LOOPS:
            raise errors.ConfigError(
                f"event_loop: must be one of {', '.join(EVENT_LOOPS)}, got {self.event_loop!r}"
            )
        if self.db_pool_size is not None and self.db_pool_size < 1:
            raise errors.ConfigError(f"db_pool_size: must be at least 1, got {self.db_pool_size}")
        if self.timer_scan_seconds <= 0:
            raise errors.ConfigError(f"timer_scan_seconds: must be positive, got {self.timer_scan_seconds}")
        if self.poll_max_wait_seconds <= 0:
            raise errors.ConfigError(
                f"poll_max_wait_seconds: must be positive, got {self.poll_max_wait_seconds}"
            )

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Reads ``ORCHESTRATOR_*`` variables, then applies the overrides that are not None."""
        env: dict[str, Any] = {}
        _read(env, "host", "ORCHESTRATOR_HOST", str)
        _read(env, "port", "ORCHESTRATOR_PORT", int)
        _read(env, "db_url", "ORCHESTRATOR_DB", str)
        _read(env, "lease_seconds", "ORCHESTRATOR_LEASE_SECONDS", float)
        _read(env, "log_level", "ORCHESTRATOR_LOG_LEVEL", str)
        _read(env, "event_loop", "ORCHESTRATOR_EVENT_LOOP", str)
        _read(env, "poll_max_wait_seconds", "ORCHESTRATOR_POLL_MAX_WAIT_SECONDS", float)
        _read(env, "db_pool_size", "ORCHESTRATOR_DB_POOL_SIZE", int)
        _read(env, "timer_scan_seconds", "ORCHESTRATOR_TIMER_SCAN_SECONDS", float)
        _read(env, "event_keys", "ORCHESTRATOR_EVENT_KEYS", split_keys)
        _read(env, "worker_keys", "ORCHESTRATOR_WORKER_KEYS", split_keys)
        _read(env, "admin_keys", "ORCHESTRATOR_ADMIN_KEYS", split_keys)
        _read(env, "tls_cert", "ORCHESTRATOR_TLS_CERT", str)
        _read(env, "tls_key", "ORCHESTRATOR_TLS_KEY", str)
        _read(env, "max_event_bytes", "ORCHESTRATOR_MAX_EVENT_BYTES", int)
        _read(env, "max_batch_events", "ORCHESTRATOR_MAX_BATCH_EVENTS", int)
        _read(env, "max_output_bytes", "ORCHESTRATOR_MAX_OUTPUT_BYTES", int)
        _read(env, "max_steps_per_run", "ORCHESTRATOR_MAX_STEPS_PER_RUN", int)
        _read(env, "max_message_bytes", "ORCHESTRATOR_MAX_MESSAGE_BYTES", int)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise errors.ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        env.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **env)


def split_keys(raw: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"a,b"`` or ``["a", "b,c"]`` (a repeated flag) -> ``("a", "b", "c")``; blanks dropped."""
    parts = [raw] if isinstance(raw, str) else list(raw)
    return tuple(key.strip() for part in parts for key in part.split(",") if key.strip())


def _read(into: dict[str, Any], name: str, var: str, parse: Any) -> None:
    raw = os.environ.get(var)
    if raw is None or raw == "":
        return
    try:
        into[name] = parse(raw)
    except ValueError:
        raise errors.ConfigError(f"{var}: cannot parse {raw!r} as {parse.__name__}") from None
