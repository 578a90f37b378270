"""What each poll worker of the procrastinate backend says it polled: ``tc_poll_workers``.

One row per ``trackcheck worker`` process (``host:pid``), written by the worker at each heartbeat and
deleted when it stops (or an hour after it was last seen, if it was killed): the dashboard and ``/metrics``
of the API processes show per-worker throughput from it, without reaching each worker.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tc_poll_workers",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("polls", sa.BigInteger, nullable=False),
        sa.Column("runs", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("last_minute", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tc_poll_workers")
