"""PostgreSQL finds wait timeouts through a partial index of the open waits' deadlines.

Replaces the (status, expires_ms) index there. Why: on a small table PostgreSQL's planner found that
index as good as the (event_name, status, match_path, match_hash) one for an event's lookups of the
waits on its name, and a plan a connection cached then read every open wait once there were 100,000,
so those lookups had to be planned at every execution. A partial index serves only queries whose text
says ``status = 'waiting'`` (the timers), never a lookup by event name. SQLite keeps the plain index
(see ``schema.waits``): it never caches a plan, and a partial index makes it prepare again every
statement that compares status with a bound value.

Operations: the index is dropped and built inside the migration's transaction (not CONCURRENTLY),
which holds writes to ``waits`` for the build; replicas still on the previous code scan ``waits`` in
their timer passes (their statement binds the status) until they are upgraded too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_OPEN = sa.text("status = 'waiting'")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_waits_status_expires_ms", table_name="waits")
    op.create_index("ix_waits_open_expires_ms", "waits", ["expires_ms"], postgresql_where=_OPEN)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_waits_open_expires_ms", table_name="waits")
    op.create_index("ix_waits_status_expires_ms", "waits", ["status", "expires_ms"])
