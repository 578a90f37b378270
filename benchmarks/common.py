"""What B1 and B2 share: throwaway PostgreSQL databases, per-process resource figures, percentiles.

Every benchmark works in a database of its own, created from scratch and dropped afterwards, so counters
such as ``pg_stat_user_tables`` start at zero and nothing is left behind on a server other sessions use.
Measured code runs in child processes (``spawn_child``) so that CPU seconds and peak RSS belong to one side.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg

PG_HOST = os.environ.get("TRACKCHECK_BENCH_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TRACKCHECK_BENCH_PGPORT", "5432"))
PG_USER = os.environ.get("TRACKCHECK_BENCH_PGUSER", "postgres")
REPO = Path(__file__).resolve().parent.parent
#: what a child prints before its JSON result: everything else on its stdout is ignored
RESULT_MARK = "RESULT "
READY_MARK = "READY"


def log(message: str) -> None:
    """Progress on stderr: the full run takes minutes and should say what it is doing."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- PostgreSQL ---------------------------------------------------------------------------------------------


def dsn(database: str) -> str:
    return f"host={PG_HOST} port={PG_PORT} user={PG_USER} dbname={database}"


def sqlalchemy_url(database: str) -> str:
    return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(dsn("postgres"), autocommit=True, connect_timeout=5)


@contextmanager
def fresh_database(prefix: str, template: str | None = None) -> Iterator[str]:
    """A new, empty (or template-cloned) database for one measurement; dropped, with its connections, after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with admin() as connection:
        clause = f" TEMPLATE {template}" if template else ""
        connection.execute(f"CREATE DATABASE {name}{clause}")
    try:
        yield name
    finally:
        with admin() as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def server_version() -> str:
    with admin() as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def preloaded_libraries() -> str:
    with admin() as connection:
        row = connection.execute("SHOW shared_preload_libraries").fetchone()
    return str(row[0]) if row else ""


COUNTER = "tc_bench_counted"


def create_query_counter(connection: psycopg.Connection[Any], view: str, table: str) -> None:
    """Make ``view`` read ``table`` through a counter of executed statements.

    ``pg_stat_statements`` would count statements directly, but it needs ``shared_preload_libraries`` and so a
    server restart, which a benchmark on a shared server must not do. Table scan counters do not work either:
    a btree scan for ``col = ANY(array)`` counts one index scan per array element. A STABLE function without
    arguments in the view's WHERE is evaluated once per executed statement (a "One-Time Filter"), and with
    ``track_functions`` on, ``pg_stat_user_functions.calls`` counts exactly the statements that read the view.
    """
    connection.execute(
        f"CREATE FUNCTION {COUNTER}() RETURNS boolean LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN true; END $$"
    )
    connection.execute(f"CREATE VIEW {view} AS SELECT * FROM {table} WHERE {COUNTER}()")


def count_queries_in(database: str) -> None:
    """Turn on function call counting for new sessions of ``database`` (a per-database setting, not the
    server's configuration; templates do not pass it on, so each fresh database gets it)."""
    with admin() as connection:
        connection.execute(f"ALTER DATABASE {database} SET track_functions = 'pl'")


def query_count(database: str) -> int:
    """Statements executed so far against the counted view (see ``create_query_counter``).

    Backends report their counters lazily (at most once a second while busy, within 10 s when idle, always
    when they exit), so this is read after the measured process has closed its connections, until it stops
    changing.
    """
    query = f"SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = '{COUNTER}'"
    last = -1
    stable_since = time.monotonic()
    deadline = time.monotonic() + 15
    with psycopg.connect(dsn(database), autocommit=True) as connection:
        while True:
            row = connection.execute(query).fetchone()  # each statement its own snapshot
            value = int(row[0]) if row else 0
            if value != last:
                last, stable_since = value, time.monotonic()
            elif time.monotonic() - stable_since >= 1.5 or time.monotonic() > deadline:
                return value
            time.sleep(0.25)


# -- child processes ----------------------------------------------------------------------------------------


@dataclass
class Child:
    """A measured child process speaking the READY / RESULT line protocol on its stdout."""

    process: subprocess.Popen[str]
    stderr_path: Path

    def wait_ready(self) -> float:
        """Block until the child says it is ready; returns that moment (wall clock)."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip() == READY_MARK:
                return time.time()
        raise RuntimeError(f"the child exited before it was ready:\n{self.stderr_tail()}")

    def result(self, timeout: float) -> dict[str, Any]:
        """The child's JSON result (it then exits); RuntimeError with its stderr if it has none."""
        assert self.process.stdout is not None
        found: dict[str, Any] | None = None
        for line in self.process.stdout:
            if line.startswith(RESULT_MARK):
                found = json.loads(line[len(RESULT_MARK) :])
        self.process.wait(timeout=timeout)
        if found is None or self.process.returncode != 0:
            raise RuntimeError(
                f"child {self.process.args!r} failed (exit {self.process.returncode}):\n{self.stderr_tail()}"
            )
        return found

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no stderr)"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def spawn_child(module: str, config: dict[str, Any], env: Mapping[str, str] | None = None) -> Child:
    """``python -m <module> <config json>`` from the repository root, stderr kept in a temp file; ``env``:
    variables set for the child over this process's own (B7: a ``PYTHONPATH`` naming the tree to measure)."""
    handle, path = tempfile.mkstemp(prefix="trackcheck-bench-", suffix=".stderr")
    stderr = os.fdopen(handle, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", module, json.dumps(config)],
        cwd=REPO,
        env=None if env is None else {**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        bufsize=1,
    )
    stderr.close()
    return Child(process, Path(path))


def emit_ready() -> None:
    print(READY_MARK, flush=True)


def emit_result(result: dict[str, Any]) -> None:
    print(RESULT_MARK + json.dumps(result), flush=True)


class WriterCpu:
    """CPU seconds that an Engine's chunk writes spend off the tick's thread, credited to the tick they belong to.

    Since the renovation a poll of several chunks writes each one on a writer thread (``tc-chunk-writer``)
    while the tick's thread goes on with the next chunk, so ``time.thread_time`` of the tick alone would
    miss that CPU. A measured Engine times its ``_apply`` calls and passes each one's thread CPU to
    ``add``, which keeps those made off the tick's thread. A tick owns what ``total`` gains from its first
    chunk (``first_chunk``, called by the measured ``_poll_chunk``) to its end (``tick_cpu``): a poll that
    waited for the group's lock while another one polled does not count that one's writes, since a poll
    ends only once its writes have, before it lets the lock go (one group per benchmark).
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._lock = threading.Lock()
        self._tick = threading.local()

    def add(self, seconds: float) -> None:
        if threading.current_thread().name.startswith("tc-chunk-writer"):
            with self._lock:
                self.total += seconds

    def begin_tick(self) -> None:
        self._tick.since = None

    def first_chunk(self) -> None:
        if getattr(self._tick, "since", 0.0) is None:
            self._tick.since = self.total

    def tick_cpu(self) -> float:
        """The writer CPU of the calling thread's tick since its first chunk (0 if it polled no chunk)."""
        since = getattr(self._tick, "since", None)
        return 0.0 if since is None else self.total - since


class CountsWriterCpu:
    """Mixed in before an Engine class: times its chunk writes and marks its first chunk for ``writer_cpu``
    (a ``WriterCpu`` the subclass sets), which B1 and B7 add to each tick's CPU."""

    writer_cpu: WriterCpu

    def _apply(self, *args: Any, **kwargs: Any) -> Any:  # a chunk's write: on a writer thread, or not
        began = time.thread_time()
        try:
            return super()._apply(*args, **kwargs)
        finally:
            self.writer_cpu.add(time.thread_time() - began)

    def _poll_chunk(self, *args: Any, **kwargs: Any) -> Any:  # the first one: this poll holds the lock
        self.writer_cpu.first_chunk()
        return super()._poll_chunk(*args, **kwargs)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far: ``VmHWM`` of /proc/self/status, which starts again at
    ``exec``. ``ru_maxrss`` does not: Linux keeps the high-water mark across it, so a child spawned by a parent
    of 350 MB reported at least 350 MB whatever it used (seen in B7's first full run)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


# -- statistics and the machine -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    versions = {}
    for package in ("trackcheck", "APScheduler", "SQLAlchemy", "psycopg", "polars", "pyinstrument"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": server_version(),
        "versions": versions,
    }
