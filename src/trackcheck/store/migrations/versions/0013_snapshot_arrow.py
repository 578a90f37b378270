"""A snapshot keeps every row in columns when there are more than its records keep: ``tc_snapshots.arrow``.

Arrow IPC bytes of what a stage read in columns (NULL: the records are the whole snapshot, as before), so
that a later stage compares by rows with more rows than ``snapshot_limit``. ``LargeBinary`` of 4 GiB: a
LONGBLOB on MariaDB, ``bytea`` on PostgreSQL, a BLOB on SQLite. Existing snapshots keep their records.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tc_snapshots") as table:
        table.add_column(sa.Column("arrow", sa.LargeBinary(length=2**32 - 1), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tc_snapshots") as table:
        table.drop_column("arrow")
