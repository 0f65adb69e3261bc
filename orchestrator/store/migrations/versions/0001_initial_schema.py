"""Initial schema: the tables of `orchestrator.store.schema` as released before migrations existed.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25 12:48:35.476919
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_events")),
        sa.UniqueConstraint("id", name=op.f("uq_events_id")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_name_seq"), ["name", "seq"], unique=False)

    op.create_table(
        "functions",
        sa.Column("app_id", sa.String(length=256), nullable=False),
        sa.Column("function_id", sa.String(length=128), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("registered_ms", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "function_id", name=op.f("pk_functions")),
    )
    op.create_table(
        "function_triggers",
        sa.Column("app_id", sa.String(length=256), nullable=False),
        sa.Column("function_id", sa.String(length=128), nullable=False),
        sa.Column("event_name", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id", "function_id"],
            ["functions.app_id", "functions.function_id"],
            name=op.f("fk_function_triggers_app_id_function_id_functions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("app_id", "function_id", "event_name", name=op.f("pk_function_triggers")),
    )
    with op.batch_alter_table("function_triggers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_function_triggers_event_name"), ["event_name"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("app_id", sa.String(length=256), nullable=False),
        sa.Column("function_id", sa.String(length=128), nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("available_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease_id", sa.String(length=36), nullable=True),
        sa.Column("lease_expires_ms", sa.BigInteger(), nullable=True),
        sa.Column("worker_id", sa.String(length=256), nullable=True),
        sa.Column("last_stop_lease_id", sa.String(length=36), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("body_attempts", sa.Integer(), nullable=False),
        sa.Column("event_mark", sa.BigInteger(), nullable=False),
        sa.Column("step_count", sa.Integer(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error_name", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_stack", sa.Text(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["event_seq"], ["events.seq"], name=op.f("fk_runs_event_seq_events")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_runs_app_id_state_available_at_ms"),
            ["app_id", "state", "available_at_ms"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_runs_created_ms"), ["created_ms"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_event_id"), ["event_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_runs_function_id_created_ms"), ["function_id", "created_ms"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_runs_state_available_at_ms"), ["state", "available_at_ms"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_runs_state_lease_expires_ms"), ["state", "lease_expires_ms"], unique=False
        )

    op.create_table(
        "steps",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_id", sa.String(length=256), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error_name", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_stack", sa.Text(), nullable=True),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.Column("wake_ms", sa.BigInteger(), nullable=True),
        sa.Column("wait_event", sa.String(length=256), nullable=True),
        sa.Column("wait_match", sa.Text(), nullable=True),
        sa.Column("resumed_by_event_id", sa.String(length=128), nullable=True),
        sa.Column("recorded_lease_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_steps_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "step_id", name=op.f("pk_steps")),
        sa.UniqueConstraint("run_id", "position", name=op.f("uq_steps_run_id_position")),
    )
    op.create_table(
        "step_attempts",
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_id", sa.String(length=256), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("ended_ms", sa.BigInteger(), nullable=True),
        sa.Column("failed", sa.Boolean(), nullable=False),
        sa.Column("error_name", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("error_stack", sa.Text(), nullable=True),
        sa.Column("lease_id", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id", "step_id"],
            ["steps.run_id", "steps.step_id"],
            name=op.f("fk_step_attempts_run_id_step_id_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "step_id", "attempt", name=op.f("pk_step_attempts")),
    )
    op.create_table(
        "waits",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("step_id", sa.String(length=256), nullable=False),
        sa.Column("event_name", sa.String(length=256), nullable=False),
        sa.Column("match_path", sa.String(length=256), nullable=False),
        sa.Column("match_value", sa.Text(), nullable=True),
        sa.Column("match_hash", sa.String(length=64), nullable=True),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolved_event_id", sa.String(length=128), nullable=True),
        sa.Column("resolved_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id", "step_id"],
            ["steps.run_id", "steps.step_id"],
            name=op.f("fk_waits_run_id_step_id_steps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_waits")),
    )
    with op.batch_alter_table("waits", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_waits_event_name_status_match_path_match_hash"),
            ["event_name", "status", "match_path", "match_hash"],
            unique=False,
        )
        batch_op.create_index(batch_op.f("ix_waits_run_id_status"), ["run_id", "status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_waits_status_expires_ms"), ["status", "expires_ms"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("waits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_waits_status_expires_ms"))
        batch_op.drop_index(batch_op.f("ix_waits_run_id_status"))
        batch_op.drop_index(batch_op.f("ix_waits_event_name_status_match_path_match_hash"))

    op.drop_table("waits")
    op.drop_table("step_attempts")
    op.drop_table("steps")
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_state_lease_expires_ms"))
        batch_op.drop_index(batch_op.f("ix_runs_state_available_at_ms"))
        batch_op.drop_index(batch_op.f("ix_runs_function_id_created_ms"))
        batch_op.drop_index(batch_op.f("ix_runs_event_id"))
        batch_op.drop_index(batch_op.f("ix_runs_created_ms"))
        batch_op.drop_index(batch_op.f("ix_runs_app_id_state_available_at_ms"))

    op.drop_table("runs")
    with op.batch_alter_table("function_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_function_triggers_event_name"))

    op.drop_table("function_triggers")
    op.drop_table("functions")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_name_seq"))

    op.drop_table("events")
