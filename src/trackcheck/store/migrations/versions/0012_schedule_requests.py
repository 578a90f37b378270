"""Schedules carry a whole run request, and can be paused: ``tc_schedules.expect``, ``overrides``, ``paused``.

``expect`` is the runs' expected events (NULL: the plan's), ``overrides`` their ``interval``/``timeout`` in
seconds (NULL: the plan's), as a run request over the API gives them; ``paused`` keeps a schedule and its
job without firing it. Existing schedules keep their behaviour: the plan's events and timing, not paused.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tc_schedules") as table:
        table.add_column(sa.Column("expect", sa.JSON, nullable=True))
        table.add_column(sa.Column("overrides", sa.JSON, nullable=True))
        table.add_column(sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("tc_schedules") as table:
        table.drop_column("paused")
        table.drop_column("overrides")
        table.drop_column("expect")
