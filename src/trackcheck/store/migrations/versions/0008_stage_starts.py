"""Indexes of the renovated poller on ``tc_run_stages``.

- ``started_at``: every two seconds the leading poller asks which stages became active since the newest start
  it saw (runs submitted by other processes). With this index that question is a short range scan, whatever
  the number of waiting runs; without it, it read every waiting run.
- ``(group_key, status, id)`` instead of ``(group_key, status)``: a tick reads its group a chunk at a time in
  stage id order, after the last id it read; with the id in the index each chunk is an index range, where
  before every chunk sorted all the group's waiting runs (at 100,000 runs, 100 chunks of 100,000 rows a tick).

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
    op.create_index("ix_tc_run_stages_group_status_id", "tc_run_stages", ["group_key", "status", "id"])
    op.drop_index("ix_tc_run_stages_group_status", table_name="tc_run_stages")


def downgrade() -> None:
    op.create_index("ix_tc_run_stages_group_status", "tc_run_stages", ["group_key", "status"])
    op.drop_index("ix_tc_run_stages_group_status_id", table_name="tc_run_stages")
    op.drop_index("ix_tc_run_stages_started_at", table_name="tc_run_stages")
