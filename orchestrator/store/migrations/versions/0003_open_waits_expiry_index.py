"""Wait timeouts are found through a partial index of the open waits' deadlines.

Replaces the (status, expires_ms) index. Why: on a small table PostgreSQL's planner found that index
as good as the (event_name, status, match_path, match_hash) one for an event's lookups of the waits
on its name, and a plan cached then read every open wait once there were 100,000; those lookups
had to be planned at every execution. A partial index serves only queries that say
``status = 'waiting'`` in their text (the timers), never a lookup by event name.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 03:10:00.000000
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
    with op.batch_alter_table("waits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_waits_status_expires_ms"))
        batch_op.create_index(
            "ix_waits_open_expires_ms",
            ["expires_ms"],
            unique=False,
            postgresql_where=_OPEN,
            sqlite_where=_OPEN,
        )


def downgrade() -> None:
    with op.batch_alter_table("waits", schema=None) as batch_op:
        batch_op.drop_index("ix_waits_open_expires_ms")
        batch_op.create_index(
            batch_op.f("ix_waits_status_expires_ms"), ["status", "expires_ms"], unique=False
        )
