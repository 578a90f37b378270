"""Index ``tc_run_stages.started_at``: the poller's sync looks for runs that joined a group since its last look.

Every two seconds the leading poller asks which stages became active since the newest start it saw (runs
submitted by other processes). With this index that question is a short range scan, whatever the number of
waiting runs; without it, it read every waiting run.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tc_run_stages_started_at", "tc_run_stages", ["started_at"])


def downgrade() -> None:
    op.drop_index("ix_tc_run_stages_started_at", table_name="tc_run_stages")
