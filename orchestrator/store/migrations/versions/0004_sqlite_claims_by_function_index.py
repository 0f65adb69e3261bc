"""SQLite claims the ready runs of some of an app's functions through an index that leads with them.

Why: a worker serving some of its app's functions claimed through the (app_id, state,
available_at_ms) index and skipped, row by row, every ready run of the app's other functions older
than its own: with 50,000 ready runs of another function, each of its claims took 5 ms, and SQLite's
claims run on the orchestrator's event loop. With (app_id, function_id, state, available_at_ms) a
claim reads one ordered range per function it asks for (0.02 ms there). PostgreSQL is unchanged: its
planner reaches those runs through the (function_id, created_ms) index.

Operations: the index is built inside the migration's transaction, which holds writes to ``runs``
for the build.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_NAME = "ix_runs_app_id_function_id_state_available_at_ms"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_index(_NAME, "runs", ["app_id", "function_id", "state", "available_at_ms"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_index(_NAME, table_name="runs")
