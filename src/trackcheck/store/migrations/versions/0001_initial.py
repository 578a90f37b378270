"""Initial schema: plans, runs, run stages, polls, snapshots.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tc_plans",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("base_dir", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_tc_plans_name_version"),
    )
    op.create_index("ix_tc_plans_name", "tc_plans", ["name"])
    op.create_table(
        "tc_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("plan_id", sa.Integer, sa.ForeignKey("tc_plans.id"), nullable=False),
        sa.Column("plan_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("expect", sa.JSON, nullable=False),
        sa.Column("overrides", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("notify", sa.JSON, nullable=True),
    )
    op.create_index("ix_tc_runs_status", "tc_runs", ["status"])
    op.create_index("ix_tc_runs_created_at", "tc_runs", ["created_at"])
    op.create_index("ix_tc_runs_plan_status", "tc_runs", ["plan_name", "status"])
    op.create_table(
        "tc_run_stages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("tc_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("errors_in_row", sa.Integer, nullable=False),
        sa.Column("group_key", sa.String(64), nullable=True),
        sa.Column("where", sa.JSON, nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("deadline", TS, nullable=True),
        sa.Column("last_polled_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("expected", sa.Integer, nullable=True),
        sa.Column("found", sa.Integer, nullable=True),
        sa.Column("evidence", sa.JSON, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.UniqueConstraint("run_id", "idx", name="uq_tc_run_stages_run_idx"),
    )
    op.create_index("ix_tc_run_stages_group_status", "tc_run_stages", ["group_key", "status"])
    op.create_table(
        "tc_polls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("tc_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stage_idx", sa.Integer, nullable=False),
        sa.Column("polled_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("found", sa.Integer, nullable=True),
        sa.Column("expected", sa.Integer, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_tc_polls_run", "tc_polls", ["run_id", "stage_idx"])
    op.create_table(
        "tc_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("tc_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("stage_idx", sa.Integer, nullable=False),
        sa.Column("records", sa.JSON, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("taken_at", TS, nullable=False),
        sa.UniqueConstraint("run_id", "stage_idx", name="uq_tc_snapshots_run_stage"),
    )


def downgrade() -> None:
    for table in ("tc_snapshots", "tc_polls", "tc_run_stages", "tc_runs", "tc_plans"):
        op.drop_table(table)
