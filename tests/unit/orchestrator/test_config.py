"""Settings from the environment and overrides."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator import errors, eventloop
from orchestrator.config import Settings


def test_defaults_put_a_sqlite_file_in_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ORCHESTRATOR_HOST", "ORCHESTRATOR_PORT", "ORCHESTRATOR_DB", "ORCHESTRATOR_LEASE_SECONDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ORCHESTRATOR_DATA_DIR", str(tmp_path))
    settings = Settings.from_env()
    assert (settings.host, settings.port, settings.lease_seconds) == ("127.0.0.1", 50051, 30.0)
    assert settings.db_url == f"sqlite:///{tmp_path / 'orchestrator.db'}"
    assert settings.poll_max_wait_seconds == 30.0 and settings.log_level == "INFO"


def test_environment_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_PORT", "6000")
    monkeypatch.setenv("ORCHESTRATOR_DB", "postgresql://u@h/db")
    monkeypatch.setenv("ORCHESTRATOR_LEASE_SECONDS", "2.5")
    monkeypatch.setenv("ORCHESTRATOR_LOG_LEVEL", "debug")
    settings = Settings.from_env(port=None, host="0.0.0.0")
    assert (settings.host, settings.port, settings.lease_seconds) == ("0.0.0.0", 6000, 2.5)
    assert settings.db_url == "postgresql+psycopg://u@h/db"
    assert Settings.from_env(port=7000).port == 7000


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("ORCHESTRATOR_PORT", "http", "ORCHESTRATOR_PORT"),
        ("ORCHESTRATOR_LOG_LEVEL", "LOUD", "log_level"),
        ("ORCHESTRATOR_EVENT_LOOP", "trio", "event_loop: must be one of auto, uvloop, asyncio"),
    ],
)
def test_bad_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(errors.ConfigError, match=field):
        Settings.from_env()


def test_unknown_overrides_are_rejected() -> None:
    with pytest.raises(errors.ConfigError, match="colour"):
        Settings.from_env(colour="blue")


def test_the_event_loop_setting_picks_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCHESTRATOR_EVENT_LOOP", "asyncio")
    assert Settings.from_env().event_loop == "asyncio"
    assert Settings().event_loop == "auto"
    for kind, expected in (("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")):
        loop = eventloop.factory(kind)()
        try:
            assert eventloop.name_of(loop) == expected
        finally:
            loop.close()


def test_uvloop_asked_for_but_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    with pytest.raises(errors.ConfigError, match="uvloop cannot be imported here.*choose asyncio"):
        eventloop.factory("uvloop")
    loop = eventloop.factory("auto")()  # auto falls back to the standard loop
    try:
        assert eventloop.name_of(loop) == "asyncio"
    finally:
        loop.close()
