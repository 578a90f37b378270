"""Soak: the state database's size over an hour of steady load, with retention on (``make soak``).

The databases live in a PostgreSQL cluster of the soak's own (``initdb`` with the server's defaults, as a
deployment has them: autovacuum on), not the machine's shared server, whose configuration for the test suite
turns autovacuum off (a state database there grows by its dead rows whatever trackcheck deletes).
A real ``trackcheck worker`` polls a fresh PostgreSQL state database with ``[retention] polls = runs = 10m,
every = 1m``. This process plays the API workers and the pipeline: every 10 s it submits a batch of runs
through ``Engine.submit_many`` (``--rate`` runs an hour, 10,000 by default), and lands each run's three events
in a PostgreSQL source database at a seeded random moment 0-60 s later; one run in twenty never gets its data
and fails at its 2-minute timeout. Every minute it records the state database's size (``pg_database_size``),
the rows of each ``tc_`` table and the worker's RSS, and at the end writes ``benchmarks/SOAK.md``.

Stable means: once retention has had time to act (after ``warm-up`` = retention + 10 minutes), the size at
the end is within 10 % of the size at the end of the warm-up. PostgreSQL does not give deleted rows' space back
to the operating system without ``VACUUM FULL``; autovacuum marks it reusable, so a steady state shows as a
plateau, not a decline.

    python -m benchmarks.soak [--minutes 60] [--rate 10000] [--output benchmarks/SOAK.md]
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import common

SEED = 20261203
RETENTION = timedelta(minutes=10)
PRUNE_EVERY = timedelta(minutes=1)
SUBMIT_EVERY = 10.0  # seconds between two batches
LAND_WITHIN = 60.0  # seconds after its submission a run's events land (at most)
NEVER_EVERY = 20  # one run in this many never gets its events (it fails at its timeout)
STABLE_WITHIN = 0.10  # the end size may exceed the warm-up size by this share and still be stable
OUTPUT = Path(__file__).with_name("SOAK.md")
TABLES = ("tc_runs", "tc_run_stages", "tc_polls", "tc_snapshots", "tc_apscheduler_jobs")

PLAN = """\
name: soak
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 10s, timeout: 2m}
sources:
  warehouse: {type: sql, url: "URL"}
expect:
  - {event_id: a, event: page_view}
  - {event_id: b, event: add_to_cart}
  - {event_id: c, event: purchase}
stages:
  - name: warehouse
    source: warehouse
    table: events
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""


@dataclass(frozen=True)
class Sample:
    """One minute's look at the state database and the worker."""

    minute: float
    size_mb: float
    rows: dict[str, int]
    rss_mb: float
    submitted: int
    ended: int


def _rows(state: str) -> tuple[float, dict[str, int]]:
    with psycopg.connect(common.dsn(state), autocommit=True) as connection:
        size = connection.execute("SELECT pg_database_size(current_database())").fetchone()
        rows = {}
        for table in TABLES:  # the job table appears when the worker's scheduler starts
            exists = connection.execute("SELECT to_regclass(%s)", (table,)).fetchone()
            counted = connection.execute(f"SELECT count(*) FROM {table}").fetchone() if exists and exists[0] else None
            rows[table] = int(counted[0]) if counted else 0
    return (int(size[0]) if size else 0) / 1e6, rows


def _ended(state: str) -> int:
    """Runs that ended and are still kept (retention deletes the older ones)."""
    with psycopg.connect(common.dsn(state), autocommit=True) as connection:
        row = connection.execute("SELECT count(*) FROM tc_runs WHERE status <> 'running'").fetchone()
    return int(row[0]) if row else 0


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def soak(minutes: float, rate: int) -> tuple[list[Sample], dict[str, Any]]:
    """Run the soak; returns the minute samples and what else the report says."""
    from tests.faults.harness import ThrowawayPostgres

    from trackcheck.engine import Engine, RunRequest, store_plan

    rng = random.Random(SEED)
    per_batch = rate * SUBMIT_EVERY / 3600
    samples: list[Sample] = []
    cluster = ThrowawayPostgres().start()
    common.PG_PORT = cluster.port  # every database of the soak goes to its own cluster
    with (
        common.fresh_database("tc_soak_state") as state,
        common.fresh_database("tc_soak_source") as source,
        tempfile.TemporaryDirectory() as folder,
    ):
        with psycopg.connect(common.dsn(source), autocommit=True) as connection:
            connection.execute("CREATE TABLE events (event_id text, test_id text, event text)")
            connection.execute("CREATE INDEX events_test_id ON events (test_id)")
        config = Path(folder) / "trackcheck.toml"
        config.write_text(
            f'[retention]\npolls = "{int(RETENTION.total_seconds())}s"\nruns = "{int(RETENTION.total_seconds())}s"\n'
            f'every = "{int(PRUNE_EVERY.total_seconds())}s"\n',
            encoding="utf-8",
        )
        state_url = common.sqlalchemy_url(state)
        submitter = Engine(state_url).start()  # migrates the state database before the worker starts
        plan_id, _ = store_plan(submitter, PLAN.replace("URL", common.sqlalchemy_url(source)), "soak.yaml", None)
        log_path = Path(folder) / "worker.log"
        with open(log_path, "w", encoding="utf-8") as worker_log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "trackcheck", "worker", "--db", state_url, "--config", str(config)],
                cwd=common.REPO,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TRACKCHECK_MIN_INTERVAL": "1s"},
            )
        landing: list[tuple[float, str]] = []  # (when, test_id): a heap of the events still to land
        submitted = 0
        owed = 0.0
        began = time.monotonic()
        next_batch = next_sample = began
        try:
            with psycopg.connect(common.dsn(source), autocommit=True) as sink:
                while (now := time.monotonic()) - began < minutes * 60:
                    if worker.poll() is not None:
                        raise RuntimeError(f"the worker exited ({worker.returncode}):\n{log_path.read_text()[-3000:]}")
                    if now >= next_batch:
                        owed += per_batch
                        count, owed = int(owed), owed - int(owed)
                        ids = [f"s{submitted + i:07d}" for i in range(count)]
                        submitter.submit_many(plan_id, [RunRequest({"test_id": t}) for t in ids])
                        for offset, test_id in enumerate(ids, start=submitted):
                            if offset % NEVER_EVERY:
                                heapq.heappush(landing, (now + rng.uniform(0, LAND_WITHIN), test_id))
                        submitted += count
                        next_batch += SUBMIT_EVERY
                    due = []
                    while landing and landing[0][0] <= now:
                        due.append(heapq.heappop(landing)[1])
                    if due:
                        with sink.cursor() as cursor:
                            cursor.executemany(
                                "INSERT INTO events VALUES (%s, %s, %s)",
                                [(e, t, n) for t in due for e, n in zip("abc", EVENTS, strict=True)],
                            )
                    if now >= next_sample:
                        size, rows = _rows(state)
                        sample = Sample((now - began) / 60, size, rows, _rss_mb(worker.pid), submitted, _ended(state))
                        samples.append(sample)
                        common.log(
                            f"soak {sample.minute:5.1f} min: state {size:7.1f} MB, runs {rows['tc_runs']:6,}, "
                            f"polls {rows['tc_polls']:7,}, worker {sample.rss_mb:5.0f} MB, submitted {submitted:,}"
                        )
                        next_sample += 60
                    time.sleep(0.2)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
            submitter.shutdown()
        errors = [line for line in log_path.read_text(encoding="utf-8").splitlines() if " ERROR " in line]
        with psycopg.connect(common.dsn(state), autocommit=True) as connection:
            autovacuum = connection.execute("SHOW autovacuum").fetchone()
            vacuums = connection.execute(
                "SELECT coalesce(sum(autovacuum_count), 0) FROM pg_stat_user_tables WHERE relname LIKE 'tc_%'"
            ).fetchone()
    cluster.destroy()
    return samples, {
        "submitted": submitted,
        "worker_errors": errors[:10],
        "autovacuum": f"{autovacuum[0] if autovacuum else '?'}, {vacuums[0] if vacuums else '?'} autovacuum passes",
    }


EVENTS = ("page_view", "add_to_cart", "purchase")


def report(samples: list[Sample], extra: dict[str, Any], minutes: float, rate: int) -> str:
    """SOAK.md: the verdict, then a row per five minutes."""
    warm = (RETENTION + timedelta(minutes=10)).total_seconds() / 60
    after = [s for s in samples if s.minute >= warm]
    verdict = "not enough samples after the warm-up to judge (run longer)"
    if len(after) >= 2:
        start, end = after[0], after[-1]
        growth = (end.size_mb - start.size_mb) / start.size_mb if start.size_mb else 0.0
        peak = max(s.size_mb for s in after)
        stable = growth <= STABLE_WITHIN
        verdict = (
            f"**{'stable' if stable else 'growing'}**: {start.size_mb:.1f} MB at minute {start.minute:.0f}, "
            f"{end.size_mb:.1f} MB at minute {end.minute:.0f} ({growth:+.1%}; peak {peak:.1f} MB; "
            f"target: within {STABLE_WITHIN:.0%})"
        )
    lines = [
        "# Soak: the state database over time, with retention on",
        "",
        f"Written by `python -m benchmarks.soak --minutes {minutes:g} --rate {rate}` on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Method: `benchmarks/soak.py` (docstring). Do not edit by hand.",
        "",
        f"- load: {rate:,} runs an hour ({extra['submitted']:,} submitted), one SQL stage polled every 10 s, events "
        f"landing 0-{LAND_WITHIN:.0f} s after submission, one run in {NEVER_EVERY} failing at its 2 m timeout",
        f"- retention: polls and ended runs kept {RETENTION.total_seconds() / 60:.0f} min, pruned every "
        f"{PRUNE_EVERY.total_seconds() / 60:.0f} min",
        f"- verdict after the {warm:.0f}-minute warm-up: {verdict}",
        f"- worker log lines at ERROR: {len(extra['worker_errors'])}",
        f"- PostgreSQL: a cluster of the soak's own with the server's defaults (autovacuum {extra['autovacuum']} on "
        "the state database's tables)",
        "",
        "| minute | state DB (MB) | tc_runs | tc_run_stages | tc_polls | tc_snapshots | jobs | worker RSS (MB) | "
        "runs submitted | ended runs kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sample in samples:
        if round(sample.minute) % 5 and sample is not samples[-1]:
            continue
        r = sample.rows
        lines.append(
            f"| {sample.minute:.0f} | {sample.size_mb:.1f} | {r['tc_runs']:,} | {r['tc_run_stages']:,} | "
            f"{r['tc_polls']:,} | {r['tc_snapshots']:,} | {r['tc_apscheduler_jobs']:,} | {sample.rss_mb:.0f} | "
            f"{sample.submitted:,} | {sample.ended:,} |"
        )
    for line in extra["worker_errors"]:
        lines.append(f"\n    {line}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=10_000, help="runs submitted an hour")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    samples, extra = soak(args.minutes, args.rate)
    text = report(samples, extra, args.minutes, args.rate)
    args.output.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
