"""B8: poll throughput with 1, 2, 4 and 8 ``trackcheck worker`` processes (issue 14, backend procrastinate).

``python -m benchmarks.b8_scaleout [--quick]`` writes ``benchmarks/SCALEOUT.md`` (``--quick``: small sizes,
printed, never over the file). Method:

- 20,000 runs in 2,000 groups (a path parameter, ``/g/{shard}``, makes each shard its own group) wait at one
  HTTP stage. The source, a threaded HTTP server in this process, answers every request after 500 ms and
  never has the events, so no run ever passes and every tick of every group is one request.
- The plan polls every 20 s: 100 ticks are due per second, more than 8 workers take (each runs 4 polls at a
  time, so at most 8 requests a second per worker); the figure is what the workers complete, not what the
  planner asks for.
- For each worker count: a fresh PostgreSQL state database; the runs submitted with ``Engine.submit_many``
  before any worker starts; N worker processes started together (one of them plans: it holds the lease);
  after a warm-up, the requests the source answered are counted over a window: **ticks completed per
  second, counted at the source**. Beside it, the ticks whose polls reached the state database (``tc_polls``
  rows of the window ÷ runs per group: a poll superseded by a newer claim writes none) and the CPU seconds
  of the worker processes over the window (``/proc/PID/stat``; PostgreSQL's own are not in it).

The machine has 2 cores: past the point where the workers' CPU (and PostgreSQL's) fill them, more workers
cannot add throughput whatever the backend; the CPU column shows where that is.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import common

OUTPUT = Path(__file__).with_name("SCALEOUT.md")
DELAY_S = 0.5
THREADS = 4  # [scheduler] workers of each worker process
PLAN = """
name: b8
key: event_id
params:
  test_id: {required: true}
  shard: {required: true}
defaults: {interval: INTERVAL, timeout: 2h}
sources:
  api: {type: http, url: "URL", timeout: 10s}
expect: [{event_id: e1, event: view}]
stages:
  - name: api
    source: api
    request: {path: "/g/{shard}"}
    records: items
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""
CONFIG = f"""
[scheduler]
backend = "procrastinate"
workers = {THREADS}
"""


@dataclass(frozen=True)
class Sizes:
    workers: tuple[int, ...]
    runs: int
    groups: int
    interval: str
    warmup_s: float
    window_s: float


FULL = Sizes((1, 2, 4, 8), 20_000, 2_000, "20s", 20.0, 30.0)
QUICK = Sizes((1, 2), 200, 20, "2s", 5.0, 5.0)


class SlowSource:
    """An HTTP source that answers ``{"items": []}`` after ``DELAY_S``, counting the requests it answered."""

    def __init__(self) -> None:
        self.answered = 0
        self._lock = threading.Lock()
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(DELAY_S)
                body = b'{"items": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with source._lock:
                    source.answered += 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 256
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Point:
    workers: int
    ticks_per_s: float  # requests the source answered
    written_per_s: float  # ticks whose polls reached the state database (a superseded poll writes none)
    worker_cpu_share: float  # CPU seconds of the worker processes per second of the window (1.0: a core)
    groups: int


def measure(workers: int, sizes: Sizes, source: SlowSource, folder: Path) -> Point:
    from trackcheck.engine import Engine, store_plan
    from trackcheck.engine.core import RunRequest

    config = folder / "trackcheck.toml"
    config.write_text(CONFIG)
    per_group = sizes.runs // sizes.groups
    with common.fresh_database("tc_bench_b8") as database:
        url = common.sqlalchemy_url(database)
        engine = Engine(url).start()
        try:
            text = PLAN.replace("URL", source.url).replace("INTERVAL", sizes.interval)
            plan_id = store_plan(engine, text, "b8.yaml", None)[0]
            requests = [RequestSpec(f"t{i}", str(i // per_group)) for i in range(sizes.runs)]
            for first in range(0, len(requests), 10_000):
                engine.submit_many(
                    plan_id,
                    [RunRequest({"test_id": r.test_id, "shard": r.shard}) for r in requests[first : first + 10_000]],
                )
            groups = len(engine.store.active_groups())
        finally:
            engine.shutdown()
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "trackcheck", "worker", "--db", url, "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=(folder / f"worker-{workers}-{i}.log").open("wb"),
                start_new_session=True,
            )
            for i in range(workers)
        ]
        try:
            time.sleep(sizes.warmup_s)
            for process in processes:
                if process.poll() is not None:
                    log = (folder / f"worker-{workers}-{processes.index(process)}.log").read_text()[-2000:]
                    raise RuntimeError(f"a worker exited during the warm-up:\n{log}")
            began, answered, since = time.monotonic(), source.answered, datetime.now(UTC)
            cpu = sum(cpu_seconds(p.pid) for p in processes)
            time.sleep(sizes.window_s)
            elapsed = time.monotonic() - began
            done = source.answered - answered
            cpu = sum(cpu_seconds(p.pid) for p in processes) - cpu
            until = datetime.now(UTC)
            written = polls_between(database, since, until) / per_group
        finally:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
    return Point(workers, done / elapsed, written / elapsed, cpu / elapsed, groups)


def polls_between(database: str, since: datetime, until: datetime) -> int:
    """The polls written to the state database in the window (a tick of a group writes one per run)."""
    with psycopg.connect(common.dsn(database)) as connection:
        row = connection.execute(
            "SELECT count(*) FROM tc_polls WHERE polled_at >= %s AND polled_at < %s", (since, until)
        ).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class RequestSpec:
    test_id: str
    shard: str


def render(points: list[Point], sizes: Sizes, seconds: float) -> str:
    machine = common.machine()
    base = points[0].ticks_per_s
    lines = [
        "# Scale-out: poll throughput with more workers (benchmark B8)",
        "",
        f"Written by `python -m benchmarks.b8_scaleout` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{machine.get('cores', '?')} cores ({machine.get('cpu', '?')}), in {seconds:.0f} s. Do not edit by hand. "
        "Method: the docstring of `benchmarks/b8_scaleout.py`.",
        "",
        f"- {sizes.runs:,} runs in {points[0].groups:,} groups at one HTTP stage; the source answers every request "
        f"after {DELAY_S * 1000:.0f} ms; interval {sizes.interval}; each worker process runs {THREADS} polls at a time",
        f"- counted at the source over {sizes.window_s:g} s after a {sizes.warmup_s:g} s warm-up",
        "",
        "| workers | ticks completed / s (at the source) | x one worker | ticks written / s (polls ÷ runs per group) "
        "| worker CPU (share of one core) |",
        "|---|---|---|---|---|",
    ]
    for point in points:
        lines.append(
            f"| {point.workers} | {point.ticks_per_s:.1f} | {point.ticks_per_s / base:.2f}x | "
            f"{point.written_per_s:.1f} | {point.worker_cpu_share * 100:.0f} % |"
        )
    four = next((p for p in points if p.workers == 4), None)
    if four is not None:
        ratio = four.ticks_per_s / base
        status = "**met**" if ratio >= 3.2 else "**missed**"
        lines += ["", f"Target (issue 14): at least 3.2x at 4 workers: {ratio:.2f}x, {status}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.b8_scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, printed, RESULTS untouched")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    began = time.monotonic()
    source = SlowSource()
    points: list[Point] = []
    try:
        with tempfile.TemporaryDirectory(prefix="trackcheck-b8-") as tmp:
            for workers in sizes.workers:
                common.log(f"B8: {workers} worker(s), {sizes.runs:,} runs in {sizes.groups:,} groups")
                point = measure(workers, sizes, source, Path(tmp))
                common.log(
                    f"B8: {workers} worker(s): {point.ticks_per_s:.1f} ticks/s, CPU {point.worker_cpu_share:.2f}"
                )
                points.append(point)
    finally:
        source.close()
    text = render(points, sizes, time.monotonic() - began)
    if args.quick:
        print(text)
        if any(p.ticks_per_s <= 0 for p in points):
            raise SystemExit("B8: a worker count completed no tick")
    else:
        OUTPUT.write_text(text)
        common.log(f"B8: written to {OUTPUT}")


if __name__ == "__main__":
    main()
