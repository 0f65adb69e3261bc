"""Schema migrations (Alembic, configured in code): bring a database to the revision this code knows.

``upgrade`` runs every pending revision in ONE transaction that first takes the dialect's migration
lock (an advisory lock on PostgreSQL, the write lock on SQLite), so replicas that start together
migrate once and the others find the work done. A database stamped with a revision this code does not
know was migrated by a newer release: it is refused (``SchemaTooNew``), never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

from orchestrator import errors
from orchestrator.store.dialect import Dialect

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The revision that created the schema of releases before migrations existed (tables from create_all).
BASELINE = "0001"
# The newest revision in MIGRATIONS_DIR (a test keeps it equal to Alembic's head). A database already
# there is opened without importing Alembic at all, which costs a third of a second at every start.
HEAD = "0004"


class SchemaTooNew(errors.ConfigError):
    """The database's schema revision is newer than this code understands."""


class SchemaOutdated(errors.ConfigError):
    """The database needs migrations and this process was told not to apply them."""


def _config(conn: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The newest revision this code knows, as Alembic finds it in MIGRATIONS_DIR."""
    from alembic.script import ScriptDirectory

    revision = ScriptDirectory.from_config(_config()).get_current_head()
    if revision is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS_DIR}")
    return revision


def current(conn: Connection) -> str | None:
    """The database's revision (None: never migrated)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if revision is None else str(revision)


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_revision(revision) is not None


def _check_not_newer(revision: str | None, url: str) -> None:
    if revision is None:
        return
    try:
        known = _known(revision)
    except Exception:  # alembic raises several types for an unknown id
        known = False
    if not known:
        raise SchemaTooNew(
            f"database {url} is at schema revision {revision!r}, newer than this orchestrator knows "
            f"(newest known: {head()!r}); upgrade the orchestrator to the release that migrated it, "
            "or point --db at another database"
        )


def upgrade(engine: Engine, dialect: Dialect, *, url: str) -> tuple[str | None, str]:
    """Applies pending migrations under the migration lock; returns (revision before, after)."""
    with engine.begin() as conn:
        dialect.lock_for_migrations(conn)
        before = current(conn)
        if before == HEAD:
            return before, before
        _check_not_newer(before, url)
        from alembic import command

        if before is None and inspect(conn).has_table("events"):
            # A database made by create_all before migrations existed: it has the baseline schema.
            command.stamp(_config(conn), BASELINE)
        command.upgrade(_config(conn), "head")
        return before, current(conn) or ""


def check(engine: Engine, *, url: str) -> None:
    """For ``serve --no-migrate``: the database must be exactly at this code's revision."""
    with engine.connect() as conn:
        revision = current(conn)
    if revision == HEAD:
        return
    _check_not_newer(revision, url)
    if revision != head():
        raise SchemaOutdated(
            f"database {url} is at schema revision {revision!r} but this orchestrator needs "
            f"{head()!r}: run `orchestrator migrate --db URL` (or start serve without --no-migrate)"
        )
