"""A poller frozen in the middle of a tick (SIGSTOP) while another takes over, then woken: the stale write.

Two ``trackcheck worker`` processes on one PostgreSQL state database: the first polls, the second waits on
standby. The first's tick is held in its source read (the feed holds the request), then the process is
stopped and its lease connection ended by the server (``pg_terminate_backend``: what a network partition
or a server-side timeout does). The standby takes the lease and polls every run to the end. When the first
process is woken, its source answer is waiting in its socket and it goes on with the tick it began: every
one of its writes must be refused (fencing, ``store.ticks.Claim``), so that no run gets a second ``passed``
poll or a second transition. Before fencing, the woken poller wrote a second ``passed`` poll for each run.

On SQLite the lease is a ``flock`` that a stopped process keeps (nobody can take over). On MariaDB the
server ends a silent leader's lease session by itself (the last scenario).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.faults.harness import Feed, scratch_database
from tests.faults.workers import WorkerProcess, deliver_all, one_passed_poll_per_stage, wait_passed
from tests.faults.workload import write_plan
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import RunRequest
from trackcheck.scheduling.lease import MARIADB_SILENT_HOLDER_S, PG_LOCK_KEY

RUNS = 10


def leader_and_standby(db: str, folder: Path, started: list[WorkerProcess]) -> tuple[WorkerProcess, WorkerProcess]:
    """Two ``trackcheck worker`` processes (APScheduler) on ``db``: the first polls, the second waits on
    standby; both are added to ``started`` as soon as they run, for the scenario to kill at its end."""
    first = WorkerProcess("first", db, folder)
    started.append(first)
    first.wait_for("polling runs in", 30)
    standby = WorkerProcess("standby", db, folder)
    started.append(standby)
    standby.wait_for("another process polls", 30)
    return first, standby


@pytest.mark.timeout(120)
def test_a_poller_woken_after_another_took_over_writes_nothing(workdir: Path, feed: Feed) -> None:
    plans = write_plan(workdir / "plans", feed, timeout=120)
    with scratch_database("postgresql", workdir) as db:
        engine = Engine(db).start()
        state = create_engine(db)
        workers: list[WorkerProcess] = []
        try:
            plan_id = store_plan(engine, next(plans.glob("*.yaml")).read_text(), "faults.yaml", None)[0]
            first, standby = leader_and_standby(db, workdir, workers)

            feed.hold()
            test_ids = [f"frozen-{i}" for i in range(RUNS)]
            deliver_all(feed, test_ids)
            runs = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in test_ids])
            assert feed.wait_for_request(timeout=30), "the first worker never polled"
            os.killpg(first.process.pid, signal.SIGSTOP)  # frozen in the middle of its read
            with state.connect() as connection:  # the server ends its lease session
                ended = connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND objid = :key AND granted "
                        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                    ),
                    {"key": PG_LOCK_KEY & 0xFFFFFFFF},
                ).all()
                connection.commit()
            assert ended == [(True,)], "the first worker held the lease"
            feed.release()  # its answer waits in its socket; the standby's requests are answered too

            standby.wait_for("polling runs in", 30)
            wait_passed(engine, runs, 60, standby.text())

            os.killpg(first.process.pid, signal.SIGCONT)  # it goes on with the tick it began
            first.wait_for("poll run=", 30)  # it compared what it read: its write comes next
            with contextlib.suppress(AssertionError):
                first.wait_for("its remaining writes refused", 5)

            one_passed_poll_per_stage(engine, runs)
            assert all(engine.result(run_id).status == "passed" for run_id in runs)
            assert "its remaining writes refused" in first.text()
            # and it notices that it lost the lease: its scheduler pauses until it can take the lease again
            first.wait_for("lost the scheduler lease", 15)
            assert first.alive
        finally:
            for worker in workers:
                worker.kill()
            state.dispose()
            engine.shutdown()


@pytest.mark.timeout(120)
def test_on_mariadb_a_silent_leader_loses_the_lease_without_help(
    workdir: Path, feed: Feed, report: Callable[[str], None]
) -> None:
    """MariaDB has no keepalive setting a client can ask for: a leader that stops talking (frozen here; a
    machine cut off is the same to the server) would keep its named lock for wait_timeout's 8 hours. Its
    lease session asks the server to end it after MARIADB_SILENT_HOLDER_S of silence: the standby takes over
    on its own, and the woken leader sees that it lost the lease."""
    plans = write_plan(workdir / "plans", feed, timeout=120)
    with scratch_database("mariadb", workdir) as db:
        engine = Engine(db).start()
        workers: list[WorkerProcess] = []
        try:
            plan_id = store_plan(engine, next(plans.glob("*.yaml")).read_text(), "faults.yaml", None)[0]
            first, standby = leader_and_standby(db, workdir, workers)

            os.killpg(first.process.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            test_ids = [f"silent-{i}" for i in range(RUNS)]
            deliver_all(feed, test_ids)
            runs = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in test_ids])
            standby.wait_for("polling runs in", MARIADB_SILENT_HOLDER_S + 15)
            took_over = time.monotonic() - stopped_at
            wait_passed(engine, runs, 60, standby.text())
            one_passed_poll_per_stage(engine, runs)

            os.killpg(first.process.pid, signal.SIGCONT)
            first.wait_for("lost the scheduler lease", 15)
            assert first.alive
            report(f"  mariadb: a frozen leader's lease taken over after {took_over:.1f} s")
        finally:
            for worker in workers:
                worker.kill()
            engine.shutdown()
