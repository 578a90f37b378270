"""When each record was first found at a stage: tc_snapshots.first_seen (a JSON map from a record's canonical
key to the ISO instant of the poll that first found it; null for stages that do not keep it, and for
snapshots taken before this revision).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tc_snapshots") as batch:
        batch.add_column(sa.Column("first_seen", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tc_snapshots") as batch:
        batch.drop_column("first_seen")
