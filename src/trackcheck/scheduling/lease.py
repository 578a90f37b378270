"""Exactly one polling scheduler per deployment, whatever the number of worker processes.

Every worker runs a scheduler, paused; the one that holds the **lease** resumes it and polls. The lease
lives with the state database, so it is released by the operating system or the database server the
moment its holder dies (even by ``kill -9``), and another worker takes over within a second or two:

- SQLite: an exclusive ``flock`` on ``<database file>.lock``;
- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) on a connection kept for it, whose
  session the server ends within seconds when the holder stops answering
  (``store.database.PG_DEAD_PEER_OPTIONS``);
- MariaDB/MySQL: a named lock (``GET_LOCK``) on a connection kept for it;
- an in-memory SQLite database lives in one process: that process leads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from trackcheck.store.database import sqlite_file

log = logging.getLogger("trackcheck.leader")
LOCK_NAME = "trackcheck.scheduler"
#: the advisory lock key of PostgreSQL: a fixed 63-bit number derived from LOCK_NAME
PG_LOCK_KEY = 0x7472_6163_6B63_6865
#: seconds of silence after which MariaDB/MySQL ends the lease holder's session (its lock goes with it);
#: PostgreSQL's sessions have keepalives instead (``store.database.PG_DEAD_PEER_OPTIONS``)
MARIADB_SILENT_HOLDER_S = 10


class Lease(Protocol):
    def try_acquire(self) -> bool: ...
    def still_held(self) -> bool: ...
    def release(self) -> None: ...


class SoleLease:
    """An in-memory database: nobody else can see it, so this process always leads."""

    def try_acquire(self) -> bool:
        return True

    def still_held(self) -> bool:
        return True

    def release(self) -> None:
        return None


class FileLease:
    """An exclusive, non-blocking ``flock`` beside the SQLite file; the kernel drops it with the process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def try_acquire(self) -> bool:
        handle = open(self.path, "ab")  # noqa: SIM115 - held open for as long as the lease is
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def still_held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class ConnectionLease:
    """A lock owned by one database session; if the session dies, the server releases the lock."""

    def __init__(
        self,
        engine: Engine,
        acquire: str,
        check: str,
        unlock: str,
        *,
        session: tuple[str, str] | None = None,
        **params: object,
    ) -> None:
        self.engine = engine
        self._sql = tuple(
            text(sql).bindparams(**{k: v for k, v in params.items() if f":{k}" in sql})
            for sql in (acquire, check, unlock)
        )
        #: a setting of the holder's session (``lease_for``: MariaDB's silent holders), and what undoes it when
        #: the lock was not had and the session goes back to the pool
        self._session = (text(session[0]), text(session[1])) if session is not None else None
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        try:
            connection = self.engine.connect()
        except SQLAlchemyError as exc:
            log.warning("cannot reach the state database to take the scheduler lease: %s", type(exc).__name__)
            return False
        try:
            if self._session is not None:
                connection.execute(self._session[0])
            got = connection.execute(self._sql[0]).scalar()
            if not got and self._session is not None:
                connection.execute(self._session[1])
            connection.commit()
        except SQLAlchemyError:
            connection.invalidate()  # in an unknown state: never back to the pool
            connection.close()
            return False
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def still_held(self) -> bool:
        if self._connection is None:
            return False
        try:
            held = bool(self._connection.execute(self._sql[1]).scalar())
            self._connection.commit()
            return held
        except SQLAlchemyError:
            self._drop()
            return False

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.execute(self._sql[2])
                self._connection.commit()
            except SQLAlchemyError:
                pass  # the connection is gone: so is the lock
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()  # never return a lock-holding session to the pool
            finally:
                self._connection = None


def lease_for(engine: Engine) -> Lease:
    """The lease that suits the state database behind ``engine``."""
    backend = engine.dialect.name
    if backend == "sqlite":
        database = sqlite_file(engine.url)
        return SoleLease() if database is None else FileLease(Path(f"{database}.lock"))
    if backend == "postgresql":  # advisory locks are per database already
        return ConnectionLease(
            engine,
            f"SELECT pg_try_advisory_lock({PG_LOCK_KEY})",
            f"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            f"AND objid = {PG_LOCK_KEY & 0xFFFFFFFF} AND granted",
            f"SELECT pg_advisory_unlock({PG_LOCK_KEY})",
        )
    if backend in ("mysql", "mariadb"):
        # named locks are server-wide: the database name keeps two deployments on one server apart. A holder
        # checks its lock every second; one that stops talking (frozen, or its machine cut off: no FIN is sent)
        # has its session ended by the server after MARIADB_SILENT_HOLDER_S, and the lock with it, where the
        # defaults (wait_timeout 8 h, the system's TCP keepalive 2 h) would leave the deployment without a poller
        return ConnectionLease(
            engine,
            "SELECT GET_LOCK(:name, 0)",
            "SELECT IS_USED_LOCK(:name) = CONNECTION_ID()",
            "SELECT RELEASE_LOCK(:name)",
            session=(
                f"SET SESSION wait_timeout = {MARIADB_SILENT_HOLDER_S}",
                "SET SESSION wait_timeout = @@GLOBAL.wait_timeout",
            ),
            name=f"{LOCK_NAME}:{engine.url.database}"[:64],
        )
    return SoleLease()


class Leadership:
    """Tries for the lease every ``every`` seconds; calls ``on_lead`` when it gets it, ``on_lose`` when the
    lease is lost (database connection gone) or given back at ``stop()``."""

    def __init__(
        self, lease: Lease, on_lead: Callable[[], None], on_lose: Callable[[], None], every: float = 1.0
    ) -> None:
        self.lease = lease
        self.on_lead = on_lead
        self.on_lose = on_lose
        self.every = every
        self.leading = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trackcheck-leadership", daemon=True)

    def start(self) -> None:
        self._step()  # lead at once when nobody else does: the first poll should not wait a second
        self._thread.start()

    def watch(self) -> None:
        """Check a lease the caller took and leads under (``trackcheck worker``, whose scheduler blocks its
        main thread): ``on_lose`` when it is lost (a former leader woken from SIGSTOP, a session the server
        ended), ``on_lead`` when it is taken again."""
        self.leading = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.leading:
            self.leading = False
            self.on_lose()
        self.lease.release()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._step()

    def _step(self) -> None:
        try:
            if not self.leading and self.lease.try_acquire():
                self.leading = True
                log.info("process %d now runs the polling scheduler", os.getpid())
                self.on_lead()
            elif self.leading and not self.lease.still_held():
                self.leading = False
                log.warning("process %d lost the scheduler lease; another worker will poll", os.getpid())
                self.on_lose()
        except Exception:  # keep trying: a failed step must not leave the deployment without a poller
            log.exception("scheduler lease check failed")
