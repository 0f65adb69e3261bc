"""Scale-out settings: pool size, poll wait, timer scan interval and --no-migrate, with their defaults."""

from __future__ import annotations

import pytest

from orchestrator import cli, errors
from orchestrator.config import Settings

VARS = ("ORCHESTRATOR_POLL_MAX_WAIT_SECONDS", "ORCHESTRATOR_DB_POOL_SIZE", "ORCHESTRATOR_TIMER_SCAN_SECONDS")


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in VARS:
        monkeypatch.delenv(var, raising=False)
    settings = Settings.from_env()
    assert (settings.poll_max_wait_seconds, settings.db_pool_size, settings.timer_scan_seconds) == (
        30.0,
        None,
        1.0,
    )
    assert settings.migrate is True


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in zip(VARS, ("5", "3", "0.5"), strict=True):
        monkeypatch.setenv(var, value)
    settings = Settings.from_env()
    assert (settings.poll_max_wait_seconds, settings.db_pool_size, settings.timer_scan_seconds) == (
        5.0,
        3,
        0.5,
    )


@pytest.mark.parametrize(("field", "value"), [("db_pool_size", 0), ("timer_scan_seconds", 0.0)])
def test_bad_values_name_the_setting(field: str, value: object) -> None:
    with pytest.raises(errors.ConfigError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_serve_no_migrate_flag_parses() -> None:
    args = cli.build_parser().parse_args(["serve", "--no-migrate"])
    assert args.no_migrate is True
    assert cli.build_parser().parse_args(["migrate", "--db", "sqlite:///x.db"]).db == "sqlite:///x.db"
