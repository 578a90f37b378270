"""``tc_run_stages.quiet`` in place of ``last_polled_at``.

- ``quiet``: the stage's last poll compared, found nothing, and gave a reason that cannot change while nothing
  is found. A poll that then finds nothing again writes only its ``tc_polls`` row and the stage's count,
  with two set-based statements for the whole chunk (``ticks.QuietPolls``). Stages that exist before this
  revision start as not quiet: their next poll is written in full and says whether it was.
- ``last_polled_at`` was written at every poll and read nowhere (the polls table holds each poll's time).
- On PostgreSQL, ``tc_run_stages`` gets a fill factor of 70: every poll of a waiting run updates its row, and
  with room left on its page PostgreSQL can write the new version there without touching the table's four
  indexes (a HOT update) and prune the old one itself; on full pages every update is a full one. Pages
  written before this revision keep their fill; new and reorganised ones use it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tc_run_stages") as batch:
        batch.add_column(sa.Column("quiet", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.drop_column("last_polled_at")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tc_run_stages SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tc_run_stages RESET (fillfactor)")
    with op.batch_alter_table("tc_run_stages") as batch:
        batch.add_column(sa.Column("last_polled_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_column("quiet")
