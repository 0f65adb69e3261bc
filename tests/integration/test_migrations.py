"""Schema migrations on both databases: from empty, from every previous revision, a database made before
migrations existed, replicas migrating at once, and a schema newer than the code (refused)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text

from orchestrator.store import factory, migrate, schema
from orchestrator.store.sql import SqlStore
from tests.support import base_env
from tests.support.databases import PostgresServer


@pytest.fixture
def empty_db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty database (no tables at all) on each backend."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database(migrated=False)
    try:
        yield url
    finally:
        server.drop_database(url)


def _revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(migrate._config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def _schema_differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"include_object": schema.include_object(conn.dialect.name)}
            )
            return list(compare_metadata(context, schema.metadata))
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return migrate.current(conn)
    finally:
        engine.dispose()


def _upgrade_to(url: str, revision: str) -> None:
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate._config(conn), revision)
    finally:
        engine.dispose()


def test_the_head_constant_is_alembics_head() -> None:
    """``migrate.HEAD`` lets a migrated database open without importing Alembic: a new migration must
    move it too, or serve would take a database one revision behind for current."""
    assert migrate.HEAD == migrate.head()


def test_upgrade_from_empty_reaches_head_and_matches_the_schema(empty_db_url: str) -> None:
    store = factory.open_store(empty_db_url)
    store.close()
    assert _revision(empty_db_url) == migrate.head()
    assert _schema_differences(empty_db_url) == []


@pytest.mark.parametrize("previous", _revisions()[:-1] or [None], ids=lambda r: f"from-{r or 'empty'}")
def test_upgrade_from_the_previous_revision(empty_db_url: str, previous: str | None) -> None:
    if previous is not None:
        _upgrade_to(empty_db_url, previous)
    assert _revision(empty_db_url) == previous
    store = factory.open_store(empty_db_url)
    store.close()
    assert _revision(empty_db_url) == migrate.head()
    assert _schema_differences(empty_db_url) == []


def test_the_wait_deadlines_index_is_partial_on_postgresql_only(empty_db_url: str) -> None:
    # compare_metadata does not compare an index's predicate. On PostgreSQL a plain (status,
    # expires_ms) index ties with the name index on a small table (migration 0003); on SQLite a
    # partial one makes every statement comparing status with a bound value prepare again.
    factory.open_store(empty_db_url).close()
    engine = create_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                query = "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'waits'"
            else:
                query = "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'waits'"
            query += " AND " + ("name" if engine.dialect.name == "sqlite" else "indexname")
            query += " LIKE '%expires%'"
            ((name, definition),) = conn.execute(text(query)).all()
    finally:
        engine.dispose()
    definition = " ".join(str(definition).split())
    if engine.dialect.name == "sqlite":
        assert name == "ix_waits_status_expires_ms" and "WHERE" not in definition, definition
    else:
        assert name == "ix_waits_open_expires_ms", name
        assert definition.endswith("WHERE ((status)::text = 'waiting'::text)"), definition


def test_runs_made_before_lost_attempts_existed_have_none(empty_db_url: str) -> None:
    _upgrade_to(empty_db_url, "0001")
    engine = create_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO events (id, name, data, ts_ms, received_ms) VALUES ('e', 'a/b', '{}', 1, 1)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO runs (id, app_id, function_id, event_seq, event_id, status, state,"
                    " available_at_ms, retries, body_attempts, event_mark, step_count, created_ms)"
                    " SELECT 'r', 'crm', 'f', seq, id, 'running', 'ready', 1, 4, 0, seq, 0, 1 FROM events"
                )
            )
        factory.open_store(empty_db_url).close()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT id, lost_attempts FROM runs")).all() == [("r", 0)]
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted(empty_db_url: str) -> None:
    # Those releases made the baseline revision's tables (create_all) and recorded no revision.
    _upgrade_to(empty_db_url, migrate.BASELINE)
    engine = create_engine(empty_db_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()
    store = factory.open_store(empty_db_url)
    store.close()
    assert _revision(empty_db_url) == migrate.head()
    assert _schema_differences(empty_db_url) == []


def test_replicas_starting_together_migrate_once(empty_db_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def start() -> None:
        try:
            barrier.wait(timeout=30)
            factory.open_store(empty_db_url).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert _revision(empty_db_url) == migrate.head()


def test_connections_opening_a_new_sqlite_file_together_all_get_wal(tmp_path: Path) -> None:
    # The first connections to a new file race to switch it to WAL, and SQLite may answer "database
    # is locked" without waiting (about one round in seven, three connections): each must retry.
    for round_ in range(20):
        url = f"sqlite:///{tmp_path / f'new-{round_}.db'}"
        engines = [factory.dialect_for(url).create_engine(url) for _ in range(3)]
        barrier = threading.Barrier(len(engines))
        errors: list[BaseException] = []

        def connect(engine: Engine, barrier: threading.Barrier, errors: list[BaseException]) -> None:
            try:
                barrier.wait(timeout=30)
                with engine.connect() as conn:
                    assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=connect, args=(engine, barrier, errors)) for engine in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        for engine in engines:
            engine.dispose()
        assert errors == [], f"round {round_}"


def test_a_newer_schema_is_refused_by_serve_and_migrate(db_url: str, tmp_path: Path) -> None:
    factory.open_store(db_url).close()
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    for command in (["migrate", "--db", db_url], ["serve", "--port", "0", "--db", db_url]):
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", *command],
            env=base_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "'9999'" in output and "newer than this orchestrator knows" in output, output


def test_no_migrate_refuses_an_unmigrated_database(empty_db_url: str) -> None:
    with pytest.raises(migrate.SchemaOutdated, match="orchestrator migrate"):
        factory.open_store(empty_db_url, create_schema=False)


def test_the_migrate_command_applies_and_reports(empty_db_url: str, tmp_path: Path) -> None:
    def run() -> str:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", "migrate", "--db", empty_db_url],
            env=base_env(),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return result.stdout

    assert f"to {migrate.head()}" in run()
    assert "already at schema revision" in run()
    store = factory.open_store(empty_db_url, create_schema=False)  # at head: accepted
    assert isinstance(store, SqlStore)
    store.close()
