"""B4: reconcile millions of rows across PostgreSQL and MariaDB, trackcheck beside reladiff (issue 13).

``python -m benchmarks.b4_recon [--quick] [--rows N] [--src PATH]`` writes ``benchmarks/RECON.md``
(``--quick``: 20,000 rows, printed, never over the file). Method:

- **Data.** A throwaway PostgreSQL database and a throwaway MariaDB database (unique names, dropped at the end
  whatever happens) each get a table ``events``: ``id BIGINT PRIMARY KEY`` and six tracking fields (a user id,
  an event name with unicode, none beyond the Basic Multilingual Plane (see ``EVENTS``), a decimal amount with
  NULLs, a double score, a microsecond timestamp, a country code). The rows are a function of their id
  (``write_rows``, columnar with polars), written once to a tab-separated file that PostgreSQL reads with
  ``COPY`` (the primary key built afterwards) and MariaDB with ``LOAD DATA LOCAL INFILE``; the generation and
  both loads are timed.
- **Truth.** D differences are then made in MariaDB, the right side: a third of them rows deleted (missing),
  a third rows added with new ids (unexpected), the rest rows with one field changed (each field in turn, by
  the smallest step its type shows: one microsecond, one cent, ...). The keys of each kind are kept. The full
  run loads 10 M rows once and measures at D = 30, then adds differences up to D = 3,000 (the first 30
  stay) and measures again.
- **The two sides**, each a child process started from here, one after the other, on the same tables:
  ``trackcheck diff PG events MARIADB events -k id -c FIELDS --json --limit 0`` with ``PYTHONPATH`` starting
  with the measured tree's ``src`` (``--src``, this tree's by default), and reladiff 0.6 from a venv of its
  own (``benchmarks/.venv-reladiff``, made on first use) with the same tables, key and columns, at its
  default algorithm (hashdiff across databases), bisection and threads, ``--json`` to read its rows and
  ``--skip-sort-results`` (see ``run_reladiff``: sorted, it loses differences).
- **Measured**: wall time from start to exit, and peak RSS as GNU time's ``%M`` (``/usr/bin/time`` is the
  child's parent, so it is the maximum resident set of the measured process alone: ``ru_maxrss`` of a child
  spawned from this process would start at this process's own high-water mark, which holds the generated
  data, because Linux keeps the mark across ``exec``). The database servers' own time and memory are in
  neither figure.
- **Checked**: trackcheck's missing and unexpected keys and the distinct keys of its mismatches; reladiff's
  ``-`` rows (missing or changed) and ``+`` rows (unexpected or changed), a key in both being changed. Both
  are compared with the truth and with each other. The run fails (exit status 1) when a figure is missing
  or a side's differences are not the truth; how fast anything is never fails it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from benchmarks import common

OUTPUT = Path(__file__).with_name("RECON.md")
MY_HOST = os.environ.get("TRACKCHECK_BENCH_MYHOST", "127.0.0.1")
MY_PORT = int(os.environ.get("TRACKCHECK_BENCH_MYPORT", "3306"))
MY_USER = os.environ.get("TRACKCHECK_BENCH_MYUSER", "root")
RELADIFF_VENV = Path(__file__).with_name(".venv-reladiff")
RELADIFF_REQUIREMENT = "reladiff[postgresql,mysql]>=0.6,<0.7"
GNU_TIME = "/usr/bin/time"
TABLE = "events"
FIELDS = ("user_id", "event", "amount", "score", "created_at", "country")
#: unicode within the Basic Multilingual Plane: reladiff 0.6 reads MariaDB over a 3-byte ``utf8`` connection
#: (sqeleton hard-codes ``charset="utf8"``), so it sees an emoji as "?" and reports each row that has one as changed
EVENTS = (
    "page_view",
    "add_to_cart",
    "checkout",
    "añadir_al_carrito",
    "Zahlung_bestätigt",
    "購入完了",
    "вход",
    "café_クリック",
)
COUNTRIES = ("DE", "FR", "US", "JP", "BR", "IN", "NL", "ES", "PL", "SE")
#: microseconds since the epoch of the first event (2026-01-01); each id is about a second later
BASE_US = 1_767_225_600_000_000
CHUNK = 1_000_000
SEED = 13
#: how the right side changes one field of a row: the smallest step the type can show
CHANGES = {
    "user_id": "user_id = user_id + 1",
    "event": "event = 'geändert_変更'",
    "amount": "amount = COALESCE(amount + 0.01, 1.00)",
    "score": "score = score + 0.015625",
    "created_at": "created_at = created_at + INTERVAL 1 MICROSECOND",
    "country": "country = 'ZZ'",
}
PG_DDL = f"""CREATE TABLE {TABLE} (id BIGINT NOT NULL, user_id BIGINT, event VARCHAR(64), amount NUMERIC(12, 2),
score DOUBLE PRECISION, created_at TIMESTAMP(6), country CHAR(2))"""
MY_DDL = f"""CREATE TABLE {TABLE} (id BIGINT PRIMARY KEY, user_id BIGINT, event VARCHAR(64), amount DECIMAL(12, 2),
score DOUBLE, created_at DATETIME(6), country CHAR(2)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""


@dataclass(frozen=True)
class Sizes:
    rows: int
    diffs: tuple[int, ...]
    timeout_s: float  # a side still running after this did not finish


FULL = Sizes(10_000_000, (30, 3_000), 3_600.0)
QUICK = Sizes(20_000, (30,), 120.0)


@dataclass(frozen=True)
class Differences:
    """Keys by kind: in PostgreSQL only (missing), in MariaDB only (unexpected), in both with other values."""

    missing: frozenset[int]
    unexpected: frozenset[int]
    changed: frozenset[int]

    def counts(self) -> str:
        return f"{len(self.missing):,} / {len(self.unexpected):,} / {len(self.changed):,}"

    def unlike(self, other: Differences, few: int = 5) -> str:
        """A few keys of each kind that these have beyond ``other`` (extra) or lack (not found); '' if none."""
        parts = []
        for kind in ("missing", "unexpected", "changed"):
            mine, theirs = getattr(self, kind), getattr(other, kind)
            for label, keys in (("extra", mine - theirs), ("not found", theirs - mine)):
                if keys:
                    shown = ", ".join(str(k) for k in sorted(keys)[:few])
                    parts.append(f"{kind}: {len(keys):,} {label} ({shown}{', ...' if len(keys) > few else ''})")
        return "; ".join(parts)


@dataclass(frozen=True)
class Truth:
    """The differences made in MariaDB, and which field each changed row had changed."""

    differences: Differences
    changed_field: dict[int, str]


@dataclass(frozen=True)
class Measured:
    """One side's run at one D: its figures, or why there are none."""

    tool: str
    seconds: float | None
    peak_rss_mb: float | None
    found: Differences | None
    error: str | None = None
    wrong_fields: int = 0  # trackcheck: changed keys whose mismatches do not name the changed field


@dataclass(frozen=True)
class Load:
    generate_s: float
    postgresql_s: float
    mariadb_s: float
    file_mb: float


# -- the data -----------------------------------------------------------------------------------------------


def write_rows(path: Path, rows: int) -> None:
    """Rows 1..N as tab-separated text (``\\N`` for NULL), the format both ``COPY`` and ``LOAD DATA`` read.

    Numbers are written as exact decimal text (the score is a multiple of 1/64), so both servers store the
    same value and any difference a tool reports is one the benchmark made.
    """
    import polars as pl

    id_ = pl.col("id")
    cents = (id_ * 37) % 100_000
    score = (id_ * 13) % 1_000_000
    with path.open("wb") as out:
        for first in range(1, rows + 1, CHUNK):
            frame = pl.DataFrame({"id": pl.int_range(first, min(first + CHUNK, rows + 1), eager=True)}).select(
                id_,
                ((id_ * 7919) % 1_000_003).alias("user_id"),
                (id_ % len(EVENTS)).replace_strict(dict(enumerate(EVENTS)), return_dtype=pl.String).alias("event"),
                pl.when(id_ % 10 == 0)
                .then(None)
                .otherwise((cents // 100).cast(pl.String) + "." + (cents % 100).cast(pl.String).str.zfill(2))
                .alias("amount"),
                ((score // 64).cast(pl.String) + "." + ((score % 64) * 15625).cast(pl.String).str.zfill(6)).alias(
                    "score"
                ),
                (BASE_US + id_ * 997_123)
                .cast(pl.Datetime("us"))
                .dt.strftime("%Y-%m-%d %H:%M:%S%.6f")
                .alias("created_at"),
                ((id_ * 31) % len(COUNTRIES))
                .replace_strict(dict(enumerate(COUNTRIES)), return_dtype=pl.String)
                .alias("country"),
            )
            frame.write_csv(out, include_header=False, separator="\t", null_value="\\N", quote_style="never")


def mariadb(database: str | None = None) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=MY_HOST,
        port=MY_PORT,
        user=MY_USER,
        password="",
        database=database,
        charset="utf8mb4",
        local_infile=True,
        autocommit=True,
    )


@contextmanager
def fresh_mariadb(prefix: str) -> Iterator[str]:
    """A new MariaDB database, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with mariadb() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        with mariadb() as connection, connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")


def load(rows: int, pg_database: str, my_database: str, folder: Path) -> Load:
    """The same rows into both tables; each side's time includes its index and statistics."""
    data = folder / "events.tsv"
    began = time.monotonic()
    write_rows(data, rows)
    generated = time.monotonic()
    with psycopg.connect(common.dsn(pg_database), autocommit=True) as connection:
        connection.execute(PG_DDL)
        with connection.cursor() as cursor, cursor.copy(f"COPY {TABLE} FROM STDIN") as copy, data.open("rb") as f:
            while block := f.read(1 << 20):
                copy.write(block)
        connection.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
        connection.execute(f"VACUUM (ANALYZE) {TABLE}")
    loaded_pg = time.monotonic()
    with mariadb(my_database) as connection, connection.cursor() as cursor:
        cursor.execute(MY_DDL)
        # an empty table, no checks: MariaDB 10.6+ then loads in bulk without undo logging
        cursor.execute("SET unique_checks = 0, foreign_key_checks = 0")
        cursor.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE {TABLE} CHARACTER SET utf8mb4 "
            "FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'",
            (str(data),),
        )
        cursor.execute(f"ANALYZE TABLE {TABLE}")
        cursor.fetchall()
    loaded_my = time.monotonic()
    size = data.stat().st_size / 2**20
    data.unlink()
    return Load(generated - began, loaded_pg - generated, loaded_my - loaded_pg, size)


def plan_truth(rows: int, total: int) -> tuple[list[int], list[int]]:
    """Seeded picks: ids to delete and ids to change, enough for ``total`` differences, none picked twice."""
    per_kind = total // 3 + 1
    picked = random.Random(SEED).sample(range(1, rows + 1), 2 * per_kind)
    return picked[:per_kind], picked[per_kind:]


def apply_truth(database: str, rows: int, d: int, previous: int, picks: tuple[list[int], list[int]]) -> None:
    """Add differences in MariaDB from ``previous`` up to ``d`` (those of ``previous`` stay as they are)."""
    deleted, changed = picks
    old_k, new_k = previous // 3, d // 3
    old_changed, new_changed = previous - 2 * old_k, d - 2 * new_k
    with mariadb(database) as connection, connection.cursor() as cursor:
        if new_k > old_k:
            cursor.execute(f"DELETE FROM {TABLE} WHERE id IN %s", (deleted[old_k:new_k],))
            cursor.executemany(
                f"INSERT INTO {TABLE} VALUES (%s, 1, 'late_event', 1.00, 0.5, '2026-06-01 00:00:00.000001', 'NL')",
                [(rows + 1 + i,) for i in range(old_k, new_k)],
            )
        for position, field in enumerate(FIELDS):
            ids = [changed[i] for i in range(old_changed, new_changed) if i % len(FIELDS) == position]
            if ids:
                cursor.execute(f"UPDATE {TABLE} SET {CHANGES[field]} WHERE id IN %s", (ids,))


def truth_at(rows: int, d: int, picks: tuple[list[int], list[int]]) -> Truth:
    deleted, changed = picks
    k = d // 3
    changed_field = {changed[i]: FIELDS[i % len(FIELDS)] for i in range(d - 2 * k)}
    return Truth(
        Differences(frozenset(deleted[:k]), frozenset(range(rows + 1, rows + 1 + k)), frozenset(changed_field)),
        changed_field,
    )


# -- the measured sides -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_measured(command: Sequence[str], env: dict[str, str], timeout: float) -> Finished:
    """Run ``command`` under GNU time; its wall time, peak RSS (``%M``, KiB), exit status and output.

    Raises ``subprocess.TimeoutExpired`` (after killing it) when it outlives ``timeout``.
    """
    with tempfile.TemporaryDirectory(prefix="trackcheck-b4-") as tmp:
        folder = Path(tmp)
        rss = folder / "rss"
        with (folder / "out").open("wb") as out, (folder / "err").open("wb") as err:
            began = time.monotonic()
            process = subprocess.Popen(
                [GNU_TIME, "-f", "%M", "-o", str(rss), *command],
                stdout=out,
                stderr=err,
                env=env,
                cwd=common.REPO,
                start_new_session=True,  # a group of its own: a side that outlives the timeout goes with GNU time
            )
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                raise
            seconds = time.monotonic() - began
        # GNU time writes "Command exited with non-zero status N" before the figure when the command fails
        peak_kib = int(rss.read_text().split()[-1])
        return Finished(
            seconds,
            peak_kib / 1024,
            process.returncode,
            (folder / "out").read_text(encoding="utf-8", errors="replace"),
            (folder / "err").read_text(encoding="utf-8", errors="replace"),
        )


def pg_url(database: str) -> str:
    return f"postgresql://{common.PG_USER}@{common.PG_HOST}:{common.PG_PORT}/{database}"


def my_url(database: str) -> str:
    return f"mysql://{MY_USER}@{MY_HOST}:{MY_PORT}/{database}"


def failure(tool: str, done: Finished) -> str:
    """One line for the report (the side's last logged ERROR, else the last line of its stderr); the tail of
    its stderr goes to the log."""
    lines = done.stderr.strip().splitlines() or ["(no stderr)"]
    common.log(f"B4: {tool} exited with {done.returncode}; the end of its stderr:\n" + "\n".join(lines[-15:]))
    errors = [line for line in lines if " ERROR - " in line]
    return f"exit {done.returncode}: {(errors or lines)[-1]}"


def as_key(key: Any) -> int:
    """An id as trackcheck reports it: the value, or a one-element list or a mapping of the key column."""
    if isinstance(key, dict):
        key = key["id"]
    elif isinstance(key, list) and len(key) == 1:
        key = key[0]
    return int(key)


def run_trackcheck(src: Path, pg: str, my: str, truth: Truth, timeout: float) -> Measured:
    """``trackcheck diff`` of the measured tree, its result document read from stdout."""
    command = [sys.executable, "-m", "trackcheck", "diff", pg_url(pg), TABLE, my_url(my), TABLE]
    command += ["-k", "id", "-c", ",".join(FIELDS), "--json", "--limit", "0"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    try:
        done = run_measured(command, env, timeout)
    except subprocess.TimeoutExpired:
        return Measured("trackcheck", None, None, None, f"did not finish in {timeout:.0f} s")
    if done.returncode not in (0, 1):
        return Measured("trackcheck", None, None, None, failure("trackcheck", done))
    try:
        document = json.loads(done.stdout)
        mismatches = document["mismatches"]
        found = Differences(
            frozenset(as_key(k) for k in document["missing"]),
            frozenset(as_key(k) for k in document["unexpected"]),
            frozenset(as_key(m["key"]) for m in mismatches),
        )
        counts = document["differences"]
        counted = (counts["missing"], counts["unexpected"], counts["changed"])
        fields: dict[int, set[str]] = {}
        for mismatch in mismatches:
            fields.setdefault(as_key(mismatch["key"]), set()).add(str(mismatch["field"]))
    except (ValueError, KeyError, TypeError) as exc:
        return Measured("trackcheck", None, None, None, f"unreadable result ({exc!r}): {done.stdout[:500]}")
    listed = (len(found.missing), len(found.unexpected), len(found.changed))
    if counted != listed:
        return Measured("trackcheck", None, None, found, f"counts {counted} are not the keys listed {listed}")
    if (done.returncode == 1) != any(listed):
        return Measured("trackcheck", None, None, found, f"exit {done.returncode} with {listed} differences")
    wrong_fields = sum(1 for key, field in truth.changed_field.items() if fields.get(key, {field}) != {field})
    return Measured("trackcheck", done.seconds, done.peak_rss_mb, found, wrong_fields=wrong_fields)


def reladiff_venv() -> Path:
    """The reladiff executable, in a venv made for it on first use (or when its requirement changed)."""
    stamp = RELADIFF_VENV / ".requirement"
    if not stamp.exists() or stamp.read_text() != RELADIFF_REQUIREMENT:
        common.log(f"B4: making {RELADIFF_VENV} with {RELADIFF_REQUIREMENT}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RELADIFF_VENV)], check=True)
        pip = [str(RELADIFF_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, RELADIFF_REQUIREMENT], check=True)
        stamp.write_text(RELADIFF_REQUIREMENT)
    return RELADIFF_VENV / "bin" / "reladiff"


def reladiff_version(executable: Path) -> str:
    done = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=False)
    return f"reladiff {done.stdout.strip().lstrip('v') or '?'}"


def run_reladiff(executable: Path, pg: str, my: str, timeout: float) -> Measured:
    """reladiff at its defaults but one; a key among both its ``-`` and ``+`` rows is a changed row.

    The one: ``--skip-sort-results``. reladiff 0.6 sorts each leaf segment's ``-`` and ``+`` rows by the whole
    row, so a changed row whose field went from NULL to a value (or back) compares None with a string; the
    TypeError ends the diff there, is logged as an ERROR, and the process still exits 0 with the differences
    found so far (at 10 M rows and D = 3,000 it reported 419 of the 3,000). Unsorted, it finds them all, by the same
    bisection, no slower. An ERROR on its stderr fails the side anyway, since its exit status does not.
    """
    command = [str(executable), pg_url(pg), TABLE, my_url(my), TABLE, "-k", "id", "--json", "--skip-sort-results"]
    for field in FIELDS:
        command += ["-c", field]
    # it prints through rich, which wraps lines at the terminal's width (80 columns when there is none)
    env = {**os.environ, "COLUMNS": "100000", "NO_COLOR": "1"}
    try:
        done = run_measured(command, env, timeout)
    except subprocess.TimeoutExpired:
        return Measured("reladiff", None, None, None, f"did not finish in {timeout:.0f} s")
    if done.returncode != 0 or " ERROR - " in done.stderr:
        return Measured("reladiff", None, None, None, failure("reladiff", done))
    minus: set[int] = set()
    plus: set[int] = set()
    try:
        for line in done.stdout.splitlines():
            if line.strip():
                sign, values = json.loads(line)
                (minus if sign == "-" else plus).add(int(values[0]))
    except (ValueError, TypeError, IndexError) as exc:
        return Measured("reladiff", None, None, None, f"unreadable output ({exc!r}): {done.stdout[:500]}")
    found = Differences(frozenset(minus - plus), frozenset(plus - minus), frozenset(minus & plus))
    return Measured("reladiff", done.seconds, done.peak_rss_mb, found)


# -- the report ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    d: int
    truth: Truth
    sides: tuple[Measured, Measured]  # trackcheck, reladiff


def problems(points: Sequence[Point]) -> list[str]:
    """What makes the run fail: a figure missing or differences other than the truth."""
    found = []
    for point in points:
        for side in point.sides:
            if side.error or side.seconds is None or side.found is None:
                found.append(f"D = {point.d:,}: {side.tool}: no figure ({side.error})")
            elif side.found != point.truth.differences:
                found.append(f"D = {point.d:,}: {side.tool}: {side.found.unlike(point.truth.differences)}")
    return found


def mariadb_version() -> str:
    with mariadb() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        row = cursor.fetchone()
    return str(row[0]) if row else "?"


def tree_commit(src: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True, text=True, check=False
    )
    return (done.stdout.strip() or "?") + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def figure(value: float | None, unit: str) -> str:
    return f"{value:,.1f} {unit}" if value is not None else "n/a"


def target(point: Point) -> str:
    """Issue 13's target at this D: trackcheck within reladiff's time and within its memory."""
    ours, theirs = point.sides
    if ours.seconds is None or theirs.seconds is None or ours.peak_rss_mb is None or theirs.peak_rss_mb is None:
        return "cannot tell (a figure is missing)"
    time_ok, memory_ok = ours.seconds <= theirs.seconds, ours.peak_rss_mb <= theirs.peak_rss_mb
    verdict = "**met**" if time_ok and memory_ok else "**missed**"
    return f"{verdict} (time {'≤' if time_ok else '>'} reladiff's, memory {'≤' if memory_ok else '>'} reladiff's)"


def render(
    sizes: Sizes, loaded: Load, points: Sequence[Point], versions: dict[str, str], seconds: float, quick: bool
) -> str:
    machine = common.machine()
    lines = [
        "# Reconciling millions of rows: trackcheck diff beside reladiff (benchmark B4)",
        "",
        f"Written by `python -m benchmarks.b4_recon{' --quick' if quick else ''}` on {machine['date']}, "
        f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, load average "
        f"{machine['load_average'][0]}, in {seconds:.0f} s. Do not edit by hand. Method: the docstring of "
        "`benchmarks/b4_recon.py`.",
        "",
        f"- PostgreSQL {machine['postgresql']} → MariaDB {versions['mariadb']}, both on this machine; "
        f"trackcheck {versions['trackcheck']}, {versions['reladiff']} (its own venv, default options but "
        "`--skip-sort-results`, without which it loses differences: see `run_reladiff`)",
        f"- `{TABLE}`: {sizes.rows:,} rows, key `id` and {len(FIELDS)} fields ({', '.join(FIELDS)}), "
        "the same in both; then the differences made in MariaDB, one load for every D (each D adds to the one "
        "before it)",
        f"- load: rows generated in {loaded.generate_s:.1f} s ({loaded.file_mb:,.0f} MB of text); PostgreSQL "
        f"`COPY` + primary key + `VACUUM ANALYZE` {loaded.postgresql_s:.1f} s; MariaDB `LOAD DATA LOCAL INFILE` "
        f"+ `ANALYZE` {loaded.mariadb_s:.1f} s",
        "- time: wall clock of the child process, start to exit; memory: its peak RSS (GNU time `%M`); each side "
        "ran once per D, trackcheck first",
        "",
        "| D | side | time | peak RSS | missing / unexpected / changed | = truth |",
        "|---|---|---|---|---|---|",
    ]
    for point in points:
        truth = point.truth.differences
        lines.append(f"| {point.d:,} | truth (made by the benchmark) | | | {truth.counts()} | |")
        for side in point.sides:
            counts = side.found.counts() if side.found is not None else "n/a"
            same = "n/a" if side.found is None else ("yes" if side.found == truth else "**no**")
            lines.append(
                f"| {point.d:,} | {side.tool} | {figure(side.seconds, 's')} | {figure(side.peak_rss_mb, 'MB')} "
                f"| {counts} | {same} |"
            )
    lines += ["", "## Per D", ""]
    for point in points:
        ours, theirs = point.sides
        lines.append(
            f"- **D = {point.d:,}**: trackcheck / reladiff: time {ratio(ours.seconds, theirs.seconds)}, "
            f"memory {ratio(ours.peak_rss_mb, theirs.peak_rss_mb)}"
        )
        if ours.found is not None and theirs.found is not None:
            unlike = ours.found.unlike(theirs.found)
            lines.append(
                "  - differences of trackcheck and reladiff: "
                + ("identical" if not unlike else f"**not identical**; trackcheck's against reladiff's: {unlike}")
            )
        for side in point.sides:
            if side.found is not None and side.found != point.truth.differences:
                lines.append(f"  - {side.tool} against the truth: {side.found.unlike(point.truth.differences)}")
            if side.error:
                lines.append(f"  - {side.tool}: no figure: {side.error}")
        if ours.found is not None and ours.wrong_fields:
            lines.append(f"  - trackcheck named another field than the one changed for {ours.wrong_fields:,} keys")
        lines.append(f"  - target (issue 13: trackcheck ≤ reladiff's time and ≤ reladiff's memory): {target(point)}")
    failed = problems(points)
    if failed:
        lines += ["", "## Failed", "", *(f"- {problem}" for problem in failed)]
    return "\n".join(lines) + "\n"


def log_side(d: int, side: Measured) -> None:
    error = f", error: {side.error}" if side.error else ""
    common.log(f"B4: D = {d:,}: {side.tool}: {figure(side.seconds, 's')}, {figure(side.peak_rss_mb, 'MB')}{error}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.b4_recon", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.rows:,} rows, printed, RECON.md untouched")
    parser.add_argument("--rows", type=int, help="rows in the table (default: 10,000,000; quick: 20,000)")
    parser.add_argument(
        "--src", type=Path, default=common.REPO / "src", help="the source tree whose trackcheck is measured"
    )
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.rows:
        sizes = Sizes(args.rows, sizes.diffs, sizes.timeout_s)
    if 2 * (max(sizes.diffs) // 3 + 1) > sizes.rows:
        parser.error(f"--rows must be at least {2 * (max(sizes.diffs) // 3 + 1)} for D = {max(sizes.diffs)}")
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"B4 measures peak RSS with GNU time: install it ({GNU_TIME}, Debian package 'time')")
    began = time.monotonic()
    reladiff = reladiff_venv()
    versions = {
        "mariadb": mariadb_version(),
        "trackcheck": tree_commit(args.src),
        "reladiff": reladiff_version(reladiff),
    }
    picks = plan_truth(sizes.rows, max(sizes.diffs))
    points = []
    with (
        tempfile.TemporaryDirectory(prefix="trackcheck-b4-") as tmp,
        common.fresh_database("tc_bench_b4") as pg,
        fresh_mariadb("tc_bench_b4") as my,
    ):
        common.log(f"B4: loading {sizes.rows:,} rows into PostgreSQL {pg} and MariaDB {my}")
        loaded = load(sizes.rows, pg, my, Path(tmp))
        common.log(
            f"B4: generated in {loaded.generate_s:.1f} s, PostgreSQL {loaded.postgresql_s:.1f} s, "
            f"MariaDB {loaded.mariadb_s:.1f} s"
        )
        previous = 0
        for d in sorted(sizes.diffs):
            apply_truth(my, sizes.rows, d, previous, picks)
            previous = d
            truth = truth_at(sizes.rows, d, picks)
            common.log(f"B4: D = {d:,}: trackcheck")
            ours = run_trackcheck(args.src, pg, my, truth, sizes.timeout_s)
            log_side(d, ours)
            common.log(f"B4: D = {d:,}: reladiff")
            theirs = run_reladiff(reladiff, pg, my, sizes.timeout_s)
            log_side(d, theirs)
            points.append(Point(d, truth, (ours, theirs)))
    text = render(sizes, loaded, points, versions, time.monotonic() - began, args.quick)
    if args.quick:
        print(text)
    else:
        OUTPUT.write_text(text)
        common.log(f"B4: written to {OUTPUT}")
    failed = problems(points)
    if failed:
        raise SystemExit("B4 failed:\n" + "\n".join(failed))


if __name__ == "__main__":
    main()
