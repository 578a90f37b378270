"""The procrastinate backend: ``trackcheck worker`` processes taking poll jobs from the PostgreSQL state database.

Real processes on the local PostgreSQL: several workers (each also competing to plan), a feed as the source.
What a user relies on: every run is polled to its end by whichever workers run; a worker killed (kill -9)
in the middle of a poll has its job given to another within seconds, and the run gets exactly one ``passed``
poll; a backend that cannot work says so and exits.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.faults.harness import Feed, scratch_database, sized
from tests.faults.workers import (
    WorkerProcess,
    deliver_all,
    one_passed_poll_per_stage,
    reads_per_tick,
    wait_passed,
)
from tests.faults.workload import EVENTS, write_plan
from tests.ports import free_port
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import RunRequest
from trackcheck.scheduling.distributed import queue_facts
from trackcheck.service.app import create_app
from trackcheck.service.config import ServiceConfig
from trackcheck.service.runtime import Service

#: polls each worker runs at a time
WORKERS = 4
CONFIG = f"""
[scheduler]
backend = "procrastinate"
workers = {WORKERS}
heartbeat = "500ms"
stalled_after = "2s"
"""


def procrastinate_worker(name: str, db: str, folder: Path) -> WorkerProcess:
    """A worker on the procrastinate backend (CONFIG), serving its metrics on a port of its own."""
    config = folder / "trackcheck.toml"
    config.write_text(CONFIG)
    return WorkerProcess(name, db, folder, config=config, metrics_port=free_port())


def submit(engine: Engine, plan_id: int, feed: Feed, test_ids: list[str]) -> list[str]:
    """Runs whose events are all in both systems already: each passes at its first poll of each stage."""
    deliver_all(feed, test_ids)
    return engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in test_ids])


@pytest.mark.timeout(180)
def test_workers_poll_every_run_and_a_killed_workers_job_goes_to_another(workdir: Path, feed: Feed) -> None:
    plans = write_plan(workdir / "plans", feed, timeout=120)
    with scratch_database("postgresql", workdir) as db:
        engine = Engine(db).start()
        state = create_engine(db)
        workers: list[WorkerProcess] = []
        try:
            plan_id = store_plan(engine, next(plans.glob("*.yaml")).read_text(), "faults.yaml", None)[0]
            workers = [procrastinate_worker(name, db, workdir) for name in ("a", "b")]
            for worker in workers:
                worker.wait_for("running poll jobs", 30)

            runs = submit(engine, plan_id, feed, [f"many-{i}" for i in range(40)])
            wait_passed(engine, runs, 60, "\n".join(w.text() for w in workers))
            one_passed_poll_per_stage(engine, runs)
            # each worker reports what it polled to the state database (the API's dashboard and /metrics show
            # it): the run stages they read add up to the polls recorded; both are listed
            recorded = sum(len(engine.store.polls(run_id)) for run_id in runs)
            deadline = time.monotonic() + 10
            reports = queue_facts(engine.store, timedelta(seconds=10)).reports
            while sum(r.runs for r in reports) < recorded:
                assert time.monotonic() < deadline, (recorded, reports)
                time.sleep(0.2)
                reports = queue_facts(engine.store, timedelta(seconds=10)).reports
            assert sum(r.runs for r in reports) == recorded and sum(r.polls for r in reports) >= 2
            assert all(r.failed == 0 for r in reports), reports
            assert {r.name for r in reports} == {f"{socket.gethostname()}:{w.process.pid}" for w in workers}
            # each worker's own metrics: what its polls asked the sources, what it sees of the others and the queue
            seen = [w.metrics() for w in workers]
            assert all(m["trackcheck_poll_workers"] == 2 for m in seen), seen
            assert (
                sum(m.get("trackcheck_source_queries_total", 0) for m in seen) >= 2
            )  # two stages, at least a query each

            # runs whose events arrive after their first poll: the group's next ticks find them (a poll queued
            # for later, at the runs' deadline two minutes away, must not hold those ticks back)
            late_ids = [f"late-{i}" for i in range(5)]
            asked = sum(feed.requests.values())
            late = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in late_ids])
            deadline = time.monotonic() + 30
            while sum(feed.requests.values()) == asked:  # their first poll
                assert time.monotonic() < deadline, "no worker polled the late runs"
                time.sleep(0.05)
            time.sleep(1.5)
            deliver_all(feed, late_ids)
            wait_passed(engine, late, 15, "\n".join(w.text() for w in workers))
            one_passed_poll_per_stage(engine, late)
            reads, reread = reads_per_tick(feed)  # nothing killed yet: each (group, tick, chunk) read once
            assert reads >= 2 and reread == 0, (reads, reread)

            # a poll held in its source read, its worker killed: the job goes back to the queue
            feed.hold()
            held = submit(engine, plan_id, feed, [f"held-{i}" for i in range(5)])
            assert feed.wait_for_request(timeout=30), "no worker polled"
            time.sleep(0.3)  # its other requests, if any, reach the feed too
            with state.connect() as connection:
                doing = connection.execute(
                    text("SELECT id FROM procrastinate_jobs WHERE status = 'doing' ORDER BY id")
                ).all()
            assert doing, "no job holds the poll"
            started = f"Starting job trackcheck.poll[{doing[0][0]}]"  # the oldest: the held runs' first poll
            [victim] = [w for w in workers if started in w.text()]
            killed_at = time.monotonic()
            victim.kill()
            feed.release()
            survivor = next(w for w in workers if w is not victim)
            wait_passed(engine, held, 30, survivor.text())
            took_over = time.monotonic() - killed_at
            assert took_over < 15, f"the killed worker's job was polled again after {took_over:.1f} s"
            one_passed_poll_per_stage(engine, held)
            reads, reread = reads_per_tick(feed)  # the killed worker's held reads may be read again, once each
            assert reread <= WORKERS, (reads, reread)

            # SIGTERM: the survivor stops cleanly and takes its report off the dashboard; the killed worker's
            # stays (hidden once silent) until the janitor deletes it an hour later
            assert survivor.stop() == 0, survivor.text()[-3000:]
            names = {r.name for r in engine.store.poll_workers(timedelta(hours=1))}
            assert names == {f"{socket.gethostname()}:{victim.process.pid}"}, names
        finally:
            for worker in workers:
                worker.kill()
            state.dispose()
            engine.shutdown()


def test_the_procrastinate_backend_on_sqlite_is_refused_with_the_reason(workdir: Path) -> None:
    config = workdir / "trackcheck.toml"
    config.write_text(CONFIG)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackcheck",
            "worker",
            "--db",
            f"sqlite:///{workdir / 'state.db'}",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "must be PostgreSQL" in done.stderr and "scheduler.backend" in done.stderr


def test_health_and_dashboard_say_so_when_no_worker_polls(workdir: Path) -> None:
    """A service on the procrastinate backend plans, but only workers poll: without one it is not healthy,
    and its health and the dashboard's runs page say why; once a worker sends heartbeats, it is."""
    with scratch_database("postgresql", workdir) as db:
        config = ServiceConfig(db=db, scheduler={"backend": "procrastinate"})
        service = Service(config).start(load_plans=False)
        page = create_app(service=service).test_client()
        try:
            facts = service.health()
            assert facts["ok"] is False and facts["workers"] == "no trackcheck worker is running: nothing polls"
            assert "no poll worker is running: nothing polls" in page.get("/").get_data(as_text=True)
            worker = procrastinate_worker("a", db, workdir)
            try:
                worker.wait_for("running poll jobs", 30)
                deadline = time.monotonic() + 10
                while (facts := service.health())["workers"] != 1:
                    assert time.monotonic() < deadline, facts
                    time.sleep(0.2)
                assert facts["ok"] is True
                shown = page.get("/").get_data(as_text=True)
                assert "1 poll worker," in shown and "0 polls waiting" in shown
                # its row, once it reported (at its first heartbeat), in the dashboard and the API's /metrics
                name = f"{socket.gethostname()}:{worker.process.pid}"
                while f'data-worker="{name}"' not in (shown := page.get("/").get_data(as_text=True)):
                    assert time.monotonic() < deadline + 10, shown
                    time.sleep(0.2)
                assert "What each poll worker polled" in shown
                scraped = page.get("/metrics").get_data(as_text=True)
                assert f'trackcheck_worker_polls_total{{worker="{name}"}} 0.0' in scraped, scraped
            finally:
                worker.kill()
            # a worker killed (it could not delete its row) is no longer listed once silent for stalled_after
            deadline = time.monotonic() + 15
            while f'data-worker="{name}"' in page.get("/").get_data(as_text=True):
                assert time.monotonic() < deadline, "the killed worker is still listed"
                time.sleep(0.2)
        finally:
            service.stop()


KILL_RUNS = sized(200, 1_000)


@pytest.mark.timeout(sized(240, 600))
def test_kill_9_of_a_worker_and_of_the_planner_loses_nothing_and_repeats_nothing(
    workdir: Path, feed: Feed, report: Callable[[str], None]
) -> None:
    """Three workers poll KILL_RUNS runs whose events arrive over a few seconds; a worker is killed in the
    middle of a tick, then the worker that plans; each is replaced. Every run must pass, with exactly one
    ``passed`` poll per stage (no stage transition twice), and another worker must plan within 15 s."""
    rng = random.Random(14)
    plans = write_plan(workdir / "plans", feed, timeout=180)
    with scratch_database("postgresql", workdir) as db:
        engine = Engine(db).start()
        workers: list[WorkerProcess] = []
        try:
            text_ = next(plans.glob("*.yaml")).read_text()
            plan_ids = [store_plan(engine, text_.replace("name: faults", f"name: k{i}"), f"k{i}.yaml", None)[0]
                        for i in range(5)]  # fmt: skip
            workers = [procrastinate_worker(name, db, workdir) for name in ("a", "b", "c")]
            for worker in workers:
                worker.wait_for("running poll jobs", 30)
            test_ids = [f"kill-{i}" for i in range(KILL_RUNS)]
            now = time.monotonic()
            for test_id in test_ids:  # the events arrive over the next few seconds, stage after stage
                for system, after in (("collector", rng.uniform(0, 4)), ("warehouse", rng.uniform(4, 8))):
                    for event in EVENTS:
                        feed.deliver(system, {**event, "test_id": test_id}, now + after)
            runs = [
                run_id
                for i, plan_id in enumerate(plan_ids)
                for run_id in engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in test_ids[i::5]])
            ]

            assert feed.wait_for_request(timeout=30)
            time.sleep(rng.uniform(0, 0.05))  # mid-tick: between a read and its write
            victim = rng.choice([w for w in workers if "now runs the polling scheduler" not in w.text()])
            victim.kill()
            workers.append(procrastinate_worker("d", db, workdir))

            time.sleep(1.0)
            [planner] = [w for w in workers if w.alive and "now runs the polling scheduler" in w.text()]
            planner.kill()
            killed_at = time.monotonic()
            workers.append(procrastinate_worker("e", db, workdir))
            deadline = time.monotonic() + 15
            while not any("now runs the polling scheduler" in w.text() for w in workers if w.alive):
                assert time.monotonic() < deadline, "no worker took the planner's place within 15 s"
                time.sleep(0.1)
            takeover = time.monotonic() - killed_at

            wait_passed(engine, runs, sized(150, 400), "\n".join(w.text()[-2000:] for w in workers))
            one_passed_poll_per_stage(engine, runs)
            # counted at the source: no read of a tick twice; a tick read again only under a later attempt, and
            # only for the jobs the two killed workers held (WORKERS polls at a time each)
            reads, reread = reads_per_tick(feed)
            assert reread <= 2 * WORKERS, f"{reread} ticks read again after the kills"
            report(
                f"  procrastinate: {len(runs):,} runs, kill -9 of a worker mid-tick and of the planner: 0 lost, "
                f"0 passed twice, planner replaced after {takeover:.1f} s; at the source {reads:,} reads, none "
                f"twice, {reread} tick(s) read again under the next attempt"
            )
        finally:
            for worker in workers:
                worker.kill()
            engine.shutdown()
