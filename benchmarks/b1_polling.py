"""B1: polling at scale. trackcheck's grouped polling beside a per-run baseline, on the local PostgreSQL.

The workload, identical for both sides: N runs wait at one SQL stage (three events per run, six columns,
compared field by field with the run's expected events). A writer in the parent process commits each run's
rows at a random moment within ``land_window`` seconds (seeded: both sides see the same schedule) and notes
the commit time. The side under test runs in a child process of its own, so its CPU seconds and peak RSS
are its own, and stops when every run has passed (or at a deadline).

- trackcheck: the runs are submitted beforehand (by the parent, like an API process would), then the child
  starts an ``Engine`` with its defaults (SQLite file state database, SQLAlchemy job store on it, thread
  pool of 10) that resumes them: one group, one job, one query per 1,000 runs per tick.
- baseline: the per-run design, written here: one APScheduler interval job per run (BackgroundScheduler,
  memory job store, thread pool of 10, the same job defaults as trackcheck), each running its own
  ``SELECT ... WHERE test_id = :t`` through SQLAlchemy, comparing with ``trackcheck.compare.evaluate_stage``
  (the same comparison code, so only the polling design differs) and recording each poll in a SQLite state
  file (one transaction per poll: the per-run design's bookkeeping).

Run as ``python -m benchmarks.b1_polling '<json config>'`` it is one side's child process; the parent side
(``measure``) is used by ``benchmarks.run``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import common

EVENTS = ("page_view", "add_to_cart", "purchase")
BASE_TS = datetime(2026, 1, 1, tzinfo=UTC)
NOISE_ROWS = 100_000
SEED = 20261124
BATCH_SIZE = 1_000  # the plan default (defaults.batch_size)
DEFAULT_INTERVAL = 58.0  # trackcheck's default stage interval, the one the CPU target is stated for
COLUMNS = ("event_id", "test_id", "event", "user_id", "amount", "ts")
BASELINE_QUERY = "SELECT event_id, test_id, event, user_id, amount, ts FROM events WHERE test_id = :t"

PLAN = """\
name: bench-b1
key: event_id
params:
  test_id: {required: true}
defaults: {interval: INTERVALs, timeout: 30m}
sources:
  warehouse: {type: sql, url: "URL"}
stages:
  - name: warehouse
    source: warehouse
    table: events
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event, user_id, amount, ts]}
"""


# -- the workload -------------------------------------------------------------------------------------------


def test_id(j: int) -> str:
    return f"t{j:06d}"


def source_rows(j: int) -> list[tuple[Any, ...]]:
    """Run j's rows as the warehouse stores them (numeric, timestamptz)."""
    tid = test_id(j)
    return [
        (
            f"{tid}-{k}",
            tid,
            EVENTS[k],
            f"u{j % 997}",
            Decimal((j * 7 + k) % 10_000) / 100,
            BASE_TS + timedelta(seconds=j, milliseconds=k),
        )
        for k in range(len(EVENTS))
    ]


def expected_events(j: int) -> list[dict[str, Any]]:
    """Run j's expected events as a test would send them (JSON: floats, ISO text), so types differ from the
    warehouse's and the comparison does its real work (numbers as numbers, instants as instants)."""
    return [
        {
            "event_id": event_id,
            "event": event,
            "user_id": user_id,
            "amount": float(amount),
            "ts": ts.isoformat(),
        }
        for event_id, _, event, user_id, amount, ts in source_rows(j)
    ]


def plan_text(database: str, interval: float) -> str:
    return PLAN.replace("INTERVAL", f"{interval:g}").replace("URL", common.sqlalchemy_url(database))


def create_template() -> str:
    """A database to clone per side: 100,000 unrelated rows, an index on test_id, and the counted view.

    Both sides read the view ``events`` over the table ``events_data``; the view's ``WHERE
    tc_bench_counted()`` is a STABLE function without arguments, which PostgreSQL evaluates once per
    executed statement (a one-time filter), so ``pg_stat_user_functions.calls`` counts source queries on the
    server, exactly (see ``common.query_count``).
    """
    name = f"tc_bench_b1tpl_{random.randrange(16**8):08x}"
    with common.admin() as connection:
        connection.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(common.dsn(name), autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE events_data (event_id text NOT NULL, test_id text NOT NULL, event text NOT NULL, "
            "user_id text NOT NULL, amount numeric(12, 2) NOT NULL, ts timestamptz NOT NULL)"
        )
        connection.execute(
            "INSERT INTO events_data SELECT 'n' || i, 'noise-' || (i % 20000), 'page_view', 'u' || (i % 997), "
            "(i % 10000) / 100.0, timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second' "
            f"FROM generate_series(1, {NOISE_ROWS}) AS i"
        )
        connection.execute("CREATE INDEX events_data_test_id ON events_data (test_id)")
        connection.execute("ANALYZE events_data")
        common.create_query_counter(connection, "events", "events_data")
    return name


def drop_database(name: str) -> None:
    with common.admin() as connection:
        connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def land_offsets(n: int, land_window: float) -> list[float]:
    """When (seconds after the side is ready) each run's rows commit; seeded, so equal for both sides."""
    rng = random.Random(SEED + n)
    return [rng.uniform(0, land_window) for _ in range(n)]


def write_rows(database: str, offsets: list[float], t0: float, commits: dict[str, float]) -> None:
    """Commit each run's rows at t0 + its offset (runs due together share a COPY and a commit); note the time
    the commit returned, which is when a poll can first see them."""
    order = sorted(range(len(offsets)), key=offsets.__getitem__)
    with psycopg.connect(common.dsn(database)) as connection:
        position = 0
        while position < len(order):
            wait = t0 + offsets[order[position]] - time.time()
            if wait > 0:
                time.sleep(min(wait, 0.5))
                continue
            now = time.time()
            batch: list[int] = []
            while position < len(order) and t0 + offsets[order[position]] <= now:
                batch.append(order[position])
                position += 1
            statement = f"COPY events_data ({', '.join(COLUMNS)}) FROM STDIN"
            with connection.cursor() as cursor, cursor.copy(statement) as copy:
                for j in batch:
                    for row in source_rows(j):
                        copy.write_row(row)
            connection.commit()
            stamp = time.time()
            for j in batch:
                commits[test_id(j)] = stamp


# -- the measured children ----------------------------------------------------------------------------------


@dataclass
class ChildConfig:
    side: str  # "trackcheck" or "baseline"
    n: int
    interval: float
    deadline: float  # seconds after READY to give up waiting for the last run
    database: str
    state_path: str
    profile: bool = False


def _quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # the baseline's skipped and late jobs are counted through scheduler events, not printed one by one
    logging.getLogger("apscheduler").setLevel(logging.ERROR)


def run_trackcheck(config: ChildConfig) -> dict[str, Any]:
    """Resume the submitted runs in an Engine with its default scheduling; record every tick."""
    from trackcheck.engine import Engine
    from trackcheck.engine.core import PollSummary
    from trackcheck.scheduling import Poller, SchedulerConfig

    done = threading.Event()
    lock = threading.Lock()
    ticks: list[dict[str, Any]] = []
    sessions: list[Any] = []

    class MeasuredEngine(common.CountsWriterCpu, Engine):
        """The Engine, with each group poll timed (wall, CPU) and optionally profiled; nothing else changes."""

        writer_cpu = common.WriterCpu()

        def poll_group(self, group: str, fresh_only: bool = False, claim: Any = None) -> PollSummary:
            profiler = None
            if config.profile:
                from pyinstrument import Profiler

                profiler = Profiler(interval=0.001, async_mode="disabled")
                profiler.start()
            began, cpu, thread_cpu = time.time(), time.process_time(), time.thread_time()
            self.writer_cpu.begin_tick()
            summary = super().poll_group(group, fresh_only, claim)
            tick = {
                "start": began,
                "end": time.time(),
                "cpu": time.process_time() - cpu,
                "thread_cpu": time.thread_time() - thread_cpu + self.writer_cpu.tick_cpu(),
                "polled": summary.polled,
                "remaining": summary.remaining,
                "fresh_only": fresh_only,
                "source_error": summary.retry_in is not None,
            }
            if profiler is not None:
                profiler.stop()
                sessions.append(profiler.last_session)
            with lock:
                ticks.append(tick)
            if summary.remaining == 0:
                done.set()
            return summary

    poller = Poller(MeasuredEngine(f"sqlite:///{config.state_path}"), SchedulerConfig())
    began, cpu = time.time(), time.process_time()
    poller.start()
    started_cpu = time.process_time() - cpu
    common.emit_ready()
    finished = done.wait(config.deadline)
    wall, cpu_total = time.time() - began, time.process_time() - cpu
    rss = common.peak_rss_mb()
    poller.shutdown()
    result: dict[str, Any] = {
        "all_done": finished,
        "ticks": sorted(ticks, key=lambda t: t["start"]),
        "phase_wall": wall,
        "phase_cpu": cpu_total,
        "start_cpu": started_cpu,
        "peak_rss_mb": rss,
        "jobstore": poller.config.jobstore,
        "workers": poller.config.workers,
    }
    if sessions:
        result["profile"] = summarize_profile(sessions)
    return result


def run_baseline(config: ChildConfig) -> dict[str, Any]:
    """The per-run design: a job per run, a query per job, a state write per poll."""
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.base import JobLookupError
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.interval import IntervalTrigger
    from sqlalchemy import create_engine, event, text

    from trackcheck.compare import evaluate_stage
    from trackcheck.loader import load_plan_text

    plan = load_plan_text(plan_text(config.database, config.interval))
    stage = plan.stages[0]
    key = plan.key_for(stage)
    expected = {test_id(j): expected_events(j) for j in range(config.n)}
    warehouse = create_engine(common.sqlalchemy_url(config.database), pool_size=10, max_overflow=5, pool_pre_ping=True)
    state = create_engine(f"sqlite:///{config.state_path}", connect_args={"check_same_thread": False, "timeout": 60})

    def pragmas(connection: Any, _record: Any) -> None:  # as trackcheck's own SQLite state database
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")

    event.listen(state, "connect", pragmas)
    with state.begin() as s:
        s.execute(
            text(
                "CREATE TABLE bl_runs (test_id TEXT PRIMARY KEY, status TEXT, attempts INTEGER, found INTEGER, "
                "last_polled_at REAL, finished_at REAL, reason TEXT)"
            )
        )
        s.execute(
            text(
                "CREATE TABLE bl_polls (id INTEGER PRIMARY KEY, test_id TEXT, polled_at REAL, outcome TEXT, "
                "found INTEGER, expected INTEGER, duration_ms REAL)"
            )
        )
        s.execute(
            text("INSERT INTO bl_runs (test_id, status, attempts) VALUES (:t, 'waiting', 0)"),
            [{"t": t} for t in expected],
        )
    query = text(BASELINE_QUERY)
    update = text(
        "UPDATE bl_runs SET status = :status, attempts = attempts + 1, found = :found, last_polled_at = :now, "
        "finished_at = :finished, reason = :reason WHERE test_id = :t"
    )
    insert = text(
        "INSERT INTO bl_polls (test_id, polled_at, outcome, found, expected, duration_ms) "
        "VALUES (:t, :now, :status, :found, :expected, :ms)"
    )
    lock = threading.Lock()
    done = threading.Event()
    counts = {"polls": 0, "queries": 0, "missed": 0, "skipped": 0, "remaining": config.n}
    first_round: list[float] = []
    scheduler = BackgroundScheduler(
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(10)},
        job_defaults={"coalesce": True, "misfire_grace_time": 30, "max_instances": 1},
        timezone="UTC",
    )

    def poll_run(tid: str) -> None:
        began = time.time()
        with warehouse.connect() as connection:
            found = [dict(row) for row in connection.execute(query, {"t": tid}).mappings()]
        now = time.time()
        with lock:
            counts["queries"] += 1
        comparison = evaluate_stage(stage, key, found, expected[tid])
        terminal = comparison.verdict != "waiting"
        with state.begin() as s:
            values = {"t": tid, "now": now, "status": comparison.verdict, "found": comparison.found}
            s.execute(update, {**values, "finished": now if terminal else None, "reason": comparison.reason})
            s.execute(insert, {**values, "expected": comparison.expected, "ms": (now - began) * 1000})
        if terminal:
            with suppress(JobLookupError):
                scheduler.remove_job(tid)
        with lock:
            counts["polls"] += 1
            if counts["polls"] == config.n:
                first_round.append(time.time())
            if terminal:
                counts["remaining"] -= 1
                if counts["remaining"] == 0:
                    done.set()

    def on_event(event: JobEvent) -> None:
        with lock:
            counts["missed" if event.code == EVENT_JOB_MISSED else "skipped"] += 1

    scheduler.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    began, cpu = time.time(), time.process_time()
    now = datetime.now(UTC)
    for tid in expected:  # every run polled at once, then every interval, like trackcheck's prompt first poll
        scheduler.add_job(
            poll_run, IntervalTrigger(seconds=config.interval, timezone=UTC), args=[tid], id=tid, next_run_time=now
        )
    scheduler.start()
    common.emit_ready()
    finished = done.wait(config.deadline)
    wall, cpu_total = time.time() - began, time.process_time() - cpu
    rss = common.peak_rss_mb()
    scheduler.shutdown(wait=False)
    pool = getattr(scheduler._executors["default"], "_pool", None)  # drop the backlog of an overloaded run
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
    with lock:
        snapshot = dict(counts)
    return {
        "all_done": finished,
        "phase_wall": wall,
        "phase_cpu": cpu_total,
        "peak_rss_mb": rss,
        "polls": snapshot["polls"],
        "queries": snapshot["queries"],
        "missed": snapshot["missed"],
        "skipped": snapshot["skipped"],
        "first_round_s": (first_round[0] - began) if first_round else None,
    }


def summarize_profile(sessions: list[Any], top: int = 15) -> dict[str, Any]:
    """The ticks' profiles merged: the functions with the most self time, and the call tree as text."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    merged = sessions[0]
    for other in sessions[1:]:
        merged = Session.combine(merged, other)
    root = merged.root_frame()
    selves: dict[str, float] = {}
    cumulative: dict[str, float] = {}

    def walk(frame: Any, stack: frozenset[str]) -> None:
        name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        if not frame.is_synthetic:
            selves[name] = selves.get(name, 0.0) + frame.total_self_time
            if name not in stack:  # recursion counts once
                cumulative[name] = cumulative.get(name, 0.0) + frame.time
        for child in frame.children:
            walk(child, stack | {name})

    if root is not None:
        walk(root, frozenset())
    total = root.time if root is not None else 0.0
    text = ConsoleRenderer(unicode=False, color=False, show_all=False, time="seconds").render(merged)
    return {
        "total_s": total,
        "self": sorted(selves.items(), key=lambda item: -item[1])[:top],
        "cumulative": sorted(cumulative.items(), key=lambda item: -item[1])[:150],
        "tree": text,
    }


def child_main(raw: str) -> None:
    _quiet_logging()
    config = ChildConfig(**json.loads(raw))
    runner: Callable[[ChildConfig], dict[str, Any]] = run_trackcheck if config.side == "trackcheck" else run_baseline
    common.emit_result(runner(config))


# -- the parent ---------------------------------------------------------------------------------------------


@dataclass
class SideResult:
    """One side at one N, with the figures the report shows."""

    side: str
    n: int
    interval: float
    detected: int
    latency_p50: float
    latency_p99: float
    latency_max: float
    queries_per_tick: float  # with all N runs waiting
    server_queries: int  # counted by PostgreSQL over the whole run
    predicted_queries: int  # the same, from the child's own log
    ticks: int
    cpu_per_tick: float  # CPU seconds of one poll of all N waiting runs (trackcheck: the tick's thread)
    background_cpu_rate: float  # CPU seconds per second outside ticks (scheduler, sync job, planner)
    core_share_at_default: float  # (cpu_per_tick + background over one default interval) / default interval
    peak_rss_mb: float
    round_s: float  # wall time to poll all N waiting runs once
    setup_s: float  # trackcheck: submitting the runs (not measured in the child)
    skipped_polls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def submit_runs(state_path: str, database: str, n: int, interval: float) -> float:
    """Submit N runs through the public Engine API, as a service would; returns the seconds it took."""
    from trackcheck.engine import Engine, store_plan

    began = time.time()
    engine = Engine(f"sqlite:///{state_path}").start()
    try:
        plan_id, _ = store_plan(engine, plan_text(database, interval), "bench-b1.yaml", None)
        for j in range(n):
            engine.submit(plan_id, {"test_id": test_id(j)}, expect=expected_events(j))
    finally:
        engine.shutdown()
    return time.time() - began


def finished_times(side: str, state_path: str) -> dict[str, float]:
    """When each run's stage passed, as the side recorded it (trackcheck: tc_run_stages.finished_at)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{state_path}")
    try:
        with engine.connect() as connection:
            if side == "baseline":
                rows = connection.execute(
                    text("SELECT test_id, finished_at FROM bl_runs WHERE status = 'passed'")
                ).all()
                return {str(t): float(f) for t, f in rows}
            rows = connection.execute(
                text(
                    "SELECT r.params, s.finished_at FROM tc_run_stages s JOIN tc_runs r ON r.id = s.run_id "
                    "WHERE s.status = 'passed'"
                )
            ).all()
    finally:
        engine.dispose()
    found: dict[str, float] = {}
    for params, finished in rows:
        moment = datetime.fromisoformat(str(finished))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite keeps UTC without the zone
        found[str(json.loads(params)["test_id"])] = moment.timestamp()
    return found


def measure(
    side: str,
    n: int,
    interval: float,
    land_window: float,
    template: str,
    *,
    profile: bool = False,
) -> tuple[SideResult, dict[str, Any]]:
    """Run one side at one N in a fresh database cloned from ``template``; returns its figures and raw result."""
    deadline = land_window + 4 * interval + 20
    with common.fresh_database("tc_bench_b1", template) as database, tempfile.TemporaryDirectory() as tmp:
        state_path = str(Path(tmp) / "state.db")
        setup_s = submit_runs(state_path, database, n, interval) if side == "trackcheck" else 0.0
        common.count_queries_in(database)
        before = common.query_count(database)
        config = ChildConfig(side, n, interval, deadline, database, state_path, profile)
        child = common.spawn_child("benchmarks.b1_polling", asdict(config))
        commits: dict[str, float] = {}
        try:
            t0 = child.wait_ready()
            writer = threading.Thread(
                target=write_rows, args=(database, land_offsets(n, land_window), t0, commits), daemon=True
            )
            writer.start()
            raw = child.result(timeout=deadline + 300)
            writer.join(timeout=land_window + 60)
        finally:
            child.kill()
        server_queries = common.query_count(database) - before
        finished = finished_times(side, state_path)
    latencies = [finished[t] - commits[t] for t in commits if t in finished]
    return _figures(side, n, interval, raw, latencies, server_queries, setup_s), raw


def _figures(
    side: str,
    n: int,
    interval: float,
    raw: dict[str, Any],
    latencies: list[float],
    server_queries: int,
    setup_s: float,
) -> SideResult:
    if side == "trackcheck":
        ticks = [t for t in raw["ticks"] if t["polled"] > 0]
        full = next((t for t in ticks if t["polled"] == n), max(ticks, key=lambda t: t["polled"]))
        predicted = sum(math.ceil(t["polled"] / BATCH_SIZE) for t in ticks)
        # thread CPU: ticks can overlap (a prompt poll queued on the group lock), process CPU would count twice
        background = max(0.0, raw["phase_cpu"] - raw["start_cpu"] - sum(t["thread_cpu"] for t in raw["ticks"]))
        background_rate = background / raw["phase_wall"]
        cpu_per_tick = full["thread_cpu"]
        queries_per_tick = float(math.ceil(full["polled"] / BATCH_SIZE))
        round_s = full["end"] - full["start"]
        tick_count = len(ticks)
        skipped = 0
        extra = {"full_tick_polled": full["polled"], "source_errors": sum(t["source_error"] for t in ticks)}
    else:
        polls = max(raw["polls"], 1)
        predicted = raw["queries"]
        background_rate = 0.0  # the scheduler's own work is per job here, inside the per-poll share
        cpu_per_tick = raw["phase_cpu"] / polls * n
        queries_per_tick = float(n)
        round_s = raw["first_round_s"] if raw["first_round_s"] is not None else float("nan")
        tick_count = raw["polls"]
        skipped = raw["skipped"] + raw["missed"]
        extra = {"missed": raw["missed"], "max_instances_skips": raw["skipped"]}
    return SideResult(
        side=side,
        n=n,
        interval=interval,
        detected=len(latencies),
        latency_p50=common.percentile(latencies, 50),
        latency_p99=common.percentile(latencies, 99),
        latency_max=max(latencies) if latencies else float("nan"),
        queries_per_tick=queries_per_tick,
        server_queries=server_queries,
        predicted_queries=predicted,
        ticks=tick_count,
        cpu_per_tick=cpu_per_tick,
        background_cpu_rate=background_rate,
        core_share_at_default=(cpu_per_tick + background_rate * DEFAULT_INTERVAL) / DEFAULT_INTERVAL,
        peak_rss_mb=raw["peak_rss_mb"],
        round_s=round_s,
        setup_s=setup_s,
        skipped_polls=skipped,
        extra=extra,
    )


if __name__ == "__main__":
    child_main(sys.argv[1])
