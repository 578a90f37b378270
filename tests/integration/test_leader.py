"""The scheduler lease: exactly one holder per state database, released when its holder goes away."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import QueuePool

from trackcheck.scheduling.lease import (
    MARIADB_SILENT_HOLDER_S,
    ConnectionLease,
    FileLease,
    Leadership,
    SoleLease,
    lease_for,
)
from trackcheck.store.database import create_state_engine


def test_sqlite_file_lease_is_exclusive_and_freed_on_release(tmp_path: Path) -> None:
    first, second = FileLease(tmp_path / "tc.db.lock"), FileLease(tmp_path / "tc.db.lock")
    assert first.try_acquire()
    assert not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


@pytest.mark.parametrize("backend", ["postgres_url", "mariadb_url"])
def test_database_lease_is_exclusive_and_dies_with_its_session(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(backend)
    one, two = create_state_engine(url), create_state_engine(url)
    try:
        first, second = lease_for(one), lease_for(two)
        assert isinstance(first, ConnectionLease)
        assert first.try_acquire() and first.still_held()
        assert not second.try_acquire()
        # the holder's session dies (as with kill -9): the server frees the lock, the other takes over
        assert first._connection is not None
        first._connection.invalidate()
        first._connection = None
        assert second.try_acquire() and second.still_held()
        second.release()
        assert not second.still_held()
    finally:
        one.dispose()
        two.dispose()


def test_mariadb_ends_a_silent_holders_session_and_a_standbys_pooled_session_is_left_as_it_was(
    mariadb_url: str,
) -> None:
    """The holder's session asks the server to end it after MARIADB_SILENT_HOLDER_S of silence (it checks its
    lock every second, so only a frozen or cut-off holder is ever silent that long); a standby's session,
    which did not get the lock, goes back to the pool with the server's own timeout, so the store's pooled
    sessions are not cut every few seconds."""
    one, two = create_state_engine(mariadb_url), create_state_engine(mariadb_url)
    first, second = lease_for(one), lease_for(two)
    try:
        assert first.try_acquire()
        assert isinstance(first, ConnectionLease) and first._connection is not None
        held = first._connection.execute(text("SELECT @@SESSION.wait_timeout")).scalar()
        assert held == MARIADB_SILENT_HOLDER_S
        assert not second.try_acquire()
        assert cast(QueuePool, two.pool).checkedin() == 1
        with two.connect() as pooled:  # the pool's one idle session: the standby's
            session, server = pooled.execute(text("SELECT @@SESSION.wait_timeout, @@GLOBAL.wait_timeout")).one()
        assert session == server != MARIADB_SILENT_HOLDER_S
    finally:
        first.release()
        one.dispose()
        two.dispose()


def test_mariadb_leases_of_two_databases_do_not_collide(mariadb_url: str, mariadb_admin: Engine) -> None:
    other = f"tc_other_{uuid.uuid4().hex[:8]}"
    with mariadb_admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {other}"))
    engines = [create_engine(mariadb_url), create_engine(mariadb_url.rsplit("/", 1)[0] + f"/{other}")]
    leases = [lease_for(e) for e in engines]
    try:
        assert [lease.try_acquire() for lease in leases] == [True, True]
    finally:
        for lease, engine in zip(leases, engines, strict=True):
            lease.release()
            engine.dispose()
        with mariadb_admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {other}"))


def test_leadership_moves_to_the_standby_when_the_leader_stops(tmp_path: Path) -> None:
    events: list[str] = []
    took_over = threading.Event()
    path = tmp_path / "tc.db.lock"
    leader = Leadership(FileLease(path), lambda: events.append("a leads"), lambda: events.append("a stops"), 0.05)
    standby = Leadership(FileLease(path), took_over.set, lambda: events.append("b stops"), 0.05)
    leader.start()
    standby.start()
    assert leader.leading and not standby.leading
    leader.stop()
    assert took_over.wait(5), "the standby never took the lease"
    standby.stop()
    assert events == ["a leads", "a stops", "b stops"]


def test_in_memory_state_leads_alone() -> None:
    engine = create_state_engine("sqlite://")
    assert isinstance(lease_for(engine), SoleLease)
    engine.dispose()
