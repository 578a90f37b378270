"""Large references kept in columns: ``tc_snapshots.arrow`` and ``tc_runs.expect_arrow``.

Arrow IPC bytes (NULL: none, as before): every row a stage read when there are more than its snapshot's
records keep, so that a later stage compares by rows with more rows than ``snapshot_limit``; and a run's
many expected events, so that a stage compared with them reads them without parsing their JSON at every poll.
``LargeBinary`` of 4 GiB: a LONGBLOB on MariaDB, ``bytea`` on PostgreSQL, a BLOB on SQLite. Existing
snapshots and runs keep their records.

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
    with op.batch_alter_table("tc_runs") as table:
        table.add_column(sa.Column("expect_arrow", sa.LargeBinary(length=2**32 - 1), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35 and later), not batch mode's copy of the table: dropping the old
    # tc_runs with foreign keys on would delete every run's stages, polls and snapshots (ON DELETE CASCADE)
    with op.batch_alter_table("tc_runs", recreate="never") as table:
        table.drop_column("expect_arrow")
    with op.batch_alter_table("tc_snapshots", recreate="never") as table:
        table.drop_column("arrow")
