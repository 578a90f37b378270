"""Connecting to the state database and bringing its schema up to date with Alembic.

SQLite is the embedded default (a file, WAL mode, a busy timeout so the poller and the API can share it);
PostgreSQL and MariaDB are supported. The URL may hold a password: it is never logged nor put in an error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from trackcheck.errors import StoreError
from trackcheck.sources.base import mask_url_passwords

DEFAULT_URL = "sqlite:///trackcheck.db"
_MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(url: str) -> str:
    """Pick the drivers trackcheck ships with when a URL names none (psycopg 3, PyMySQL)."""
    for plain, driver in (
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mysql+pymysql://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def create_state_engine(url: str) -> Engine:
    """A SQLAlchemy engine for the state database, tuned per dialect; StoreError if the URL is unusable."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise StoreError(f"not a database URL: {mask_url_passwords(url)}") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if parsed.database in (None, "", ":memory:"):
            kwargs["poolclass"] = StaticPool
        else:
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = create_engine(parsed, **kwargs)
    except (ImportError, SQLAlchemyError) as exc:
        raise StoreError(f"cannot use state database {parsed.render_as_string()}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    # a forked process pool worker must not reuse the parent's connections
    os.register_at_fork(after_in_child=lambda: engine.dispose(close=False))
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def migrate(engine: Engine) -> None:
    """Apply every Alembic migration not yet applied (idempotent; safe on every start)."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate the state database: {describe_db_error(exc)}") from exc


def describe_db_error(exc: SQLAlchemyError) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with the statement), with any URL password masked."""
    return mask_url_passwords(str(getattr(exc, "orig", None) or exc))
