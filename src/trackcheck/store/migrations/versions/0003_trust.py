"""Trust boundary: plans know whether they were uploaded (tc_plans.trusted, .sealed), connections defined
over the API (tc_connections), dashboard logins that logging out ends on the server (tc_sessions).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tc_plans") as batch:
        # plans stored before this revision came from the plans folder, the CLI or an API that had no
        # trust boundary yet: they keep working as they did
        batch.add_column(sa.Column("trusted", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("sealed", sa.Text, nullable=True))
    op.create_table(
        "tc_connections",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("sealed", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tc_connections_updated_at", "tc_connections", ["updated_at"])
    op.create_table(
        "tc_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_tc_sessions_expires_at", "tc_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tc_sessions_expires_at", "tc_sessions")
    op.drop_table("tc_sessions")
    op.drop_index("ix_tc_connections_updated_at", "tc_connections")
    op.drop_table("tc_connections")
    with op.batch_alter_table("tc_plans") as batch:
        batch.drop_column("sealed")
        batch.drop_column("trusted")
