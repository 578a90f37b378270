"""Recurring runs (tc_schedules) and when a run's webhook notification is due (tc_runs.notify_due).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tc_runs") as batch:
        batch.add_column(sa.Column("notify_due", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_tc_runs_notify_due", ["notify_due"])
    op.create_table(
        "tc_schedules",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("plan_name", sa.String(200), nullable=False),
        sa.Column("cron", sa.String(200), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_id", sa.String(32), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("tc_schedules")
    with op.batch_alter_table("tc_runs") as batch:
        batch.drop_index("ix_tc_runs_notify_due")
        batch.drop_column("notify_due")
