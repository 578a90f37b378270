"""Indexes for retention (``Store.prune``): ``tc_polls.polled_at`` and ``tc_runs.finished_at``.

The pruning job looks every few minutes for polls older than a cutoff and for ended runs that finished
before one. Without these indexes each look reads the whole table (``tc_polls`` grows by millions of rows an
hour under load), even when nothing is old enough; with them it is a range scan that stops at the cutoff.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tc_polls_polled_at", "tc_polls", ["polled_at"])
    op.create_index("ix_tc_runs_finished_at", "tc_runs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_tc_runs_finished_at", table_name="tc_runs")
    op.drop_index("ix_tc_polls_polled_at", table_name="tc_polls")
