"""Runs count the attempts lost with their workers (lease expiry) until the next step outcome.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 13:55:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The server default fills existing rows (NOT NULL needs a value) and keeps inserts that do not
    # name the column valid. Batch mode: SQLite rebuilds the table, PostgreSQL alters it in place.
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lost_attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("lost_attempts")
