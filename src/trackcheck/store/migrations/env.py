"""Alembic environment: runs on the connection the Store hands over (no alembic.ini, no URL in config)."""

from __future__ import annotations

from alembic import context

from trackcheck.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table="tc_alembic_version",
    render_as_batch=connection.dialect.name == "sqlite",
    include_name=lambda name, type_, parent: type_ != "table" or bool(name and name.startswith("tc_")),
)
with context.begin_transaction():
    context.run_migrations()
