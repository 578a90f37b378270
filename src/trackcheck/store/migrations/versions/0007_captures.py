"""Buffers of the listening bus sources: tc_capture_channels (what the poller listens to, since when, the gaps)
and tc_captures (the messages heard, kept until no run needs the channel).

MQTT and a RabbitMQ exchange keep no history: what trackcheck did not hear while a run waited is gone. The
poller drains each subscription about every second into these tables, so a restart of the service loses
nothing already heard, and every process can read it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tc_capture_channels",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("durable", sa.Boolean, nullable=False),
        sa.Column("listening_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heard_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("gaps", sa.JSON, nullable=False),
        sa.Column("dropped", sa.Integer, nullable=False),
    )
    op.create_table(
        "tc_captures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heard", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.LargeBinary(length=2**24), nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
    )
    op.create_index("ix_tc_captures_channel", "tc_captures", ["channel", "id"])


def downgrade() -> None:
    op.drop_index("ix_tc_captures_channel", table_name="tc_captures")
    op.drop_table("tc_captures")
    op.drop_table("tc_capture_channels")
