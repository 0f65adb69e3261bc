"""Settings of the orchestrator process, from the environment and explicit overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator import errors

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "db_url", normalize_db_url(self.db_url))
        if not 0 <= self.port <= 65535:
            raise errors.ConfigError(f"port: must be between 0 and 65535, got {self.port}")
        if self.lease_seconds <= 0:
            raise errors.ConfigError(f"lease_seconds: must be positive, got {self.lease_seconds}")
        if self.log_level.upper() not in LOG_LEVELS:
            raise errors.ConfigError(
                f"log_level: must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}"
            )
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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise errors.ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        env.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **env)


def _read(into: dict[str, Any], name: str, var: str, parse: type[Any]) -> None:
    raw = os.environ.get(var)
    if raw is None or raw == "":
        return
    try:
        into[name] = parse(raw)
    except ValueError:
        raise errors.ConfigError(f"{var}: cannot parse {raw!r} as {parse.__name__}") from None
