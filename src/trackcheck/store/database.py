"""Connecting to the state database and bringing its schema up to date with Alembic.

SQLite is the embedded default (a file, WAL mode, a busy timeout so the poller and the API can share it);
PostgreSQL and MariaDB are supported. The URL may hold a password: it is never logged nor put in an error.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError
from sqlalchemy.pool import StaticPool

from trackcheck.errors import StoreError
from trackcheck.plan.masking import mask_url_passwords

DEFAULT_URL = "sqlite:///trackcheck.db"
_MIGRATIONS = Path(__file__).with_name("migrations")
#: Alembic keeps its migration context in module globals: threads of one process migrate in turn
_MIGRATING = threading.Lock()
_MIGRATION_LOCK_KEY = 0x7472_6163_6B6D_6967  # PostgreSQL advisory lock of migrations ("trackmig")


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


def sqlite_file(url: URL) -> str | None:
    """The file of a SQLite URL; None for an in-memory database (one process only) or another backend."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


#: server settings of every trackcheck session on a PostgreSQL state database: the server ends a session whose
#: client stopped answering within about 10 s (keepalive probes on an idle socket, a timeout on unacknowledged
#: data). A client cut off from the network (a machine lost, a cable pulled) sends no FIN; with the system's
#: defaults the server kept its sessions for hours, and with them the poller's lease and the row locks of a
#: write in progress, which stopped every other process from taking over (tests/faults/test_machines.py).
PG_DEAD_PEER_OPTIONS = (
    "-c tcp_keepalives_idle=3 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=3 -c tcp_user_timeout=8000"
)


def with_dead_peer_options(url: URL) -> URL:
    """``url`` (PostgreSQL) with ``PG_DEAD_PEER_OPTIONS`` added to the libpq ``options`` it may already carry."""
    given = url.query.get("options")
    options = " ".join(filter(None, [given if isinstance(given, str) else " ".join(given or ()), PG_DEAD_PEER_OPTIONS]))
    return url.update_query_dict({"options": options})


def create_state_engine(url: str) -> Engine:
    """A SQLAlchemy engine for the state database, tuned per dialect; StoreError if the URL is unusable."""
    try:
        parsed = make_url(normalize_url(url))
    except ArgumentError:
        raise StoreError(f"not a database URL: {mask_url_passwords(url)}") from None
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        file = sqlite_file(parsed)
        if file is None:
            kwargs["poolclass"] = StaticPool
        else:
            Path(file).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if parsed.get_backend_name() == "postgresql":
        parsed = with_dead_peer_options(parsed)
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
    from alembic import command  # migrating is rare: commands that never do start without Alembic
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    try:
        # SQLite: the file lock is taken before the transaction begins, or the transaction could read the
        # schema as it was before another process migrated it (WAL snapshot) and migrate it again
        # and the transaction is committed before the lock is released: the next process sees all of it
        with (
            _MIGRATING,
            _sqlite_file_lock(engine),
            engine.connect() as connection,
            _one_migration_at_a_time(connection),
            connection.begin(),
        ):
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot migrate the state database: {describe_db_error(exc)}") from exc


#: MariaDB/MySQL errors about a value rather than the server: an incorrect string, a too long value, JSON
#: that its column check refuses
_MYSQL_DATA_ERRORS = frozenset({1366, 1406, 3140, 4025})


def is_data_error(exc: SQLAlchemyError) -> bool:
    """Whether the database refused a value it was sent (so writing other values may succeed), as opposed
    to being unreachable or failing on its own."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    if not isinstance(exc, DBAPIError):
        return isinstance(exc, StatementError)  # the driver could not even send the value
    orig = getattr(exc, "orig", None)
    number = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    return number in _MYSQL_DATA_ERRORS


def describe_db_error(exc: SQLAlchemyError) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with the statement), with any URL password masked."""
    return mask_url_passwords(str(getattr(exc, "orig", None) or exc))


@contextmanager
def _one_migration_at_a_time(connection: Connection) -> Iterator[None]:
    """Processes that start at once on a new state database (parallel CI jobs, gunicorn workers) migrate
    one after the other; the later ones then find the schema at head and do nothing.

    The lock is the session's, taken before the migration's transaction begins and released after it was
    committed. Released before the commit (a lock of the transaction itself, or one released on leaving it),
    the next process could read the version row as it was: on MariaDB, whose DDL commits at once but whose
    last version update waits for the commit, it then ran the last migration again ("Duplicate column")."""
    backend = connection.dialect.name
    if backend == "postgresql":
        take, give = "SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"
        binds: dict[str, Any] = {"key": _MIGRATION_LOCK_KEY}
    elif backend in ("mysql", "mariadb"):
        take, give = "SELECT GET_LOCK(:key, 120)", "SELECT RELEASE_LOCK(:key)"
        binds = {"key": f"trackcheck.migrate:{connection.engine.url.database}"[:64]}
    else:
        yield  # SQLite: _sqlite_file_lock, taken before the transaction
        return
    connection.execute(text(take), binds)
    connection.commit()  # the lock stays: it is the session's
    try:
        yield
    finally:
        connection.execute(text(give), binds)
        connection.commit()


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Processes migrating one SQLite file take turns on a lock file beside it."""
    if sqlite_file(engine.url) is None:
        yield
        return
    with open(f"{engine.url.database}.migrate.lock", "ab") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
