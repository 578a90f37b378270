"""The connections an admin defined over the API (``tc_connections``): the only place that talks SQL
about them. What is stored is already split into a shown part and a sealed part (see
``trackcheck.connections``); this module never sees a key or a secret in clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from trackcheck.store.models import Connection
from trackcheck.store.repository import Store, aware, utcnow


@dataclass(frozen=True)
class StoredConnection:
    """One row of ``tc_connections``: ``options`` masked, ``sealed`` the encrypted full options (or None)."""

    name: str
    type: str
    options: dict[str, Any]
    sealed: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Connection) -> StoredConnection:
        created, updated = aware(row.created_at), aware(row.updated_at)
        assert created is not None and updated is not None
        return cls(row.name, row.type, dict(row.options), row.sealed, created, updated)


class ConnectionStore:
    """Reads and writes ``tc_connections`` through the state database's ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> list[StoredConnection]:
        with self.store.session() as s:
            return [StoredConnection.from_row(r) for r in s.scalars(select(Connection).order_by(Connection.name))]

    def get(self, name: str) -> StoredConnection | None:
        with self.store.session() as s:
            row = s.get(Connection, name)
            return StoredConnection.from_row(row) if row is not None else None

    def put(self, name: str, type_: str, options: dict[str, Any], sealed: str | None) -> bool:
        """Create or replace; True when it was created."""
        now = utcnow()
        with self.store.session(write=True) as s:
            row = s.get(Connection, name)
            created = row is None
            if row is None:
                row = Connection(name=name, created_at=now)
                s.add(row)
            row.type, row.options, row.sealed, row.updated_at = type_, options, sealed, now
            return created

    def delete(self, name: str) -> bool:
        with self.store.session(write=True) as s:
            return bool(s.execute(delete(Connection).where(Connection.name == name)).rowcount)  # type: ignore[attr-defined]

    def revision(self) -> tuple[int, datetime | None]:
        """Changes whenever a connection is added, changed or removed: cached plans and sources are then
        rebuilt (one cheap query, run by the poller's periodic sync)."""
        with self.store.session() as s:
            count, newest = s.execute(select(func.count(), func.max(Connection.updated_at))).one()
            return int(count), aware(newest)
