"""Fencing of polls: ``tc_poller_epochs`` and ``tc_group_ticks``.

- ``tc_poller_epochs``: one row per lease (``poller``), its epoch counted up by each process that takes
  the lease. A poll carries the epoch of the leader that started it, and its writes are refused once
  another leader has taken a newer one.
- ``tc_group_ticks``: per group, the newest ``(epoch, tick, attempt)`` claimed. A poll claims its tick
  before reading; its writes are refused once a newer tick of the group was claimed (a retried job, the
  next tick of a worker that did not stall).

Both start empty: the first leader after this revision takes epoch 1.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tc_poller_epochs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "tc_group_ticks",
        sa.Column("group_key", sa.String(64), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("tick", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tc_group_ticks")
    op.drop_table("tc_poller_epochs")
