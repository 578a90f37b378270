"""Whether a source error can fix itself: tc_run_stages.error_kind and tc_polls.error_kind
(``permanent`` or ``transient``; null when there was no error, or for polls before this revision).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tc_run_stages") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(16), nullable=True))
    with op.batch_alter_table("tc_polls") as batch:
        batch.add_column(sa.Column("error_kind", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tc_polls") as batch:
        batch.drop_column("error_kind")
    with op.batch_alter_table("tc_run_stages") as batch:
        batch.drop_column("error_kind")
