"""Alembic environment: always runs on the connection ``orchestrator.store.migrate`` hands over, inside
its transaction (which already holds the migration lock on PostgreSQL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from orchestrator.store import schema


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=schema.metadata,
        include_object=schema.include_object(connection.dialect.name),
        # SQLite cannot ALTER most things: batch mode rebuilds a table instead (a no-op elsewhere).
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `orchestrator migrate` (orchestrator.store.migrate)")
_run(connection)
