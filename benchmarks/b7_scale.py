"""B7: 100,000 waiting runs (issue 9). Today's trackcheck beside the main it renovates, in one invocation.

The workload is B1's (``b1_polling``): N runs wait at one SQL stage, three events each, compared field by
field with the run's expected events; a writer in the parent commits each run's rows at a seeded random
moment within ``land_window`` seconds of the child saying READY and notes the commit time. What B7 changes:
the **state database is PostgreSQL** (a fresh database per side), the plan polls every ``interval`` seconds
(10 s in the full run), and the runs are submitted **inside the measured child**, with that side's own code.

The two sides are two source trees run on the same venv's dependencies:

- ``trackcheck``: the working tree's ``src`` (whatever it holds when the benchmark runs);
- ``main``: ``REFERENCE``, materialised once per invocation with ``git archive <ref> src | tar -x``.

Each side runs as ``python -m benchmarks.b7_scale '<json config>'`` with ``PYTHONPATH`` starting with its
tree's ``src``; the venv's editable install of trackcheck comes later on ``sys.path``, so the tree wins. The
child says where ``trackcheck`` was imported from (``ORIGIN``) and refuses to go on, as the parent refuses to
use its figures, unless every ``trackcheck`` module comes from that tree.

In the child, in this order: store the plan and submit the N runs with ``Engine.submit_many`` in batches of
``SUBMIT_BATCH``, on an engine that does not poll (timed: runs submitted per second); then start polling
with ``SchedulerConfig()``'s defaults (SQLAlchemy job store on the state database, thread pool of 10) and say
READY. Two engine APIs are told apart by feature: the main of 2026-12-03 (``Engine(url, SchedulerConfig(),
setup=...)``, ``start()``, ``engine.scheduler``) and the renovated one (``Engine(url, setup=...)`` polled by
``trackcheck.scheduling.Poller(engine, SchedulerConfig())``, ``poller.scheduler``). Measured there:

- every ``Engine.poll_group`` (wall clock, ``time.thread_time``, runs polled and left), as B1 does;
- APScheduler's ``EVENT_JOB_MISSED`` (too late, beyond the misfire grace time) and
  ``EVENT_JOB_MAX_INSTANCES`` (the previous run of the job still running) of the poll jobs: *missed polls*;
- the process CPU over the polling phase and its peak RSS (``VmHWM``, submission included).

The child stops when a tick leaves no run waiting, or ``deadline`` seconds after READY; a watchdog ends it
with the figures it has if submitting takes longer than ``submit_limit``, and the parent kills a child that
outlives both. Detection latency is read afterwards from the state database: each run's
``tc_run_stages.finished_at`` minus the commit time of its rows, for the runs that passed before the child
stopped. The share of one core at the 58 s default is B1's: (thread CPU of the tick that polled all N
waiting runs + the process CPU outside ticks per second x 58 s) / 58 s (``b1_polling._figures``).
"""

from __future__ import annotations

import gc
import hashlib
import importlib
import json
import logging
import math
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import b1_polling, common

#: the main of 2026-12-03, before the engine renovation (Engine with its own scheduler; poll summaries as dicts)
REFERENCE = "c27d08e"
SUBMIT_BATCH = 10_000
ORIGIN_MARK = "ORIGIN "
SUBMITTED_MARK = "SUBMITTED "
SIDES = ("trackcheck", "main")
#: seconds a child may take to start (imports) and, after its result, to shut down
GRACE_S = 120.0


def deadline_for(interval: float, land_window: float) -> float:
    """Seconds after READY that a side may take before it is stopped with the figures it has."""
    return land_window + 6 * interval + 120


def submit_limit_for(n: int) -> float:
    """Seconds a side may take to submit N runs (slower than 250 runs/s: it did not finish)."""
    return 60 + n / 250


def plan_text(database: str, interval: float) -> str:
    """B1's plan (one SQL stage, compared with ``expect``), polled every ``interval`` seconds."""
    return b1_polling.plan_text(database, interval).replace("name: bench-b1", "name: bench-b7", 1)


def summary_field(summary: Any, name: str) -> Any:
    """A field of ``Engine.poll_group``'s summary: a dict in main, a frozen dataclass after the renovation."""
    if isinstance(summary, Mapping):
        return summary[name]
    return getattr(summary, name)


# -- the measured child -------------------------------------------------------------------------------------


@dataclass
class ChildConfig:
    side: str
    src: str  # the tree's src directory: every trackcheck module must come from it
    n: int
    interval: float
    deadline: float  # seconds after READY
    submit_limit: float  # seconds from the child's start to the end of submission
    source_database: str
    state_url: str
    batch: int = SUBMIT_BATCH


def trackcheck_origin(src: str) -> dict[str, Any]:
    """Where ``trackcheck`` and its loaded submodules come from; ``stray`` lists those outside ``src``."""
    import trackcheck

    root = Path(src).resolve()
    stray = sorted(
        name
        for name, module in list(sys.modules.items())
        if (name == "trackcheck" or name.startswith("trackcheck."))
        and getattr(module, "__file__", None)
        and not Path(str(module.__file__)).resolve().is_relative_to(root)
    )
    loaded = sum(1 for name in list(sys.modules) if name == "trackcheck" or name.startswith("trackcheck."))
    return {"file": str(Path(str(trackcheck.__file__)).resolve()), "src": str(root), "modules": loaded, "stray": stray}


def _check_origin(origin: dict[str, Any], src: str, side: str) -> None:
    """RuntimeError unless trackcheck (and every loaded submodule) was imported from ``src``."""
    root = Path(src).resolve()
    if not Path(origin["file"]).is_relative_to(root) or origin["stray"]:
        raise RuntimeError(
            f"B7 {side}: trackcheck was imported from {origin['file']} (modules outside {root}: "
            f"{origin['stray'] or 'none'}), not from the tree under test {root}: check PYTHONPATH and the venv"
        )


def _quiet_logging() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # late and skipped jobs are counted, not printed


def run_child(config: ChildConfig) -> dict[str, Any]:
    """Submit the N runs with this tree's code, then poll them until every one passed or the deadline."""
    child_began = time.monotonic()
    lock = threading.Lock()
    state: dict[str, Any] = {"phase": "starting", "submitted": 0, "submit_s": 0.0}
    submitted = threading.Event()

    def watchdog() -> None:  # submit_many cannot be interrupted: give up on the side, with what it has
        if not submitted.wait(max(0.0, config.submit_limit - (time.monotonic() - child_began))):
            with lock:
                partial = {**state, "all_done": False, "stopped": f"submission took over {config.submit_limit:g} s"}
            partial["peak_rss_mb"] = common.peak_rss_mb()
            if partial["submit_s"] > 0:
                partial["submit_rate"] = partial["submitted"] / partial["submit_s"]
            common.emit_result(partial)
            os._exit(0)

    threading.Thread(target=watchdog, name="b7-watchdog", daemon=True).start()

    origin = trackcheck_origin(config.src)  # before anything else of trackcheck is imported
    print(ORIGIN_MARK + json.dumps(origin), flush=True)
    _check_origin(origin, config.src, config.side)

    from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent

    from trackcheck import engine as engine_module
    from trackcheck.engine.core import RunRequest
    from trackcheck.scheduling.config import SchedulerConfig

    # Typed Any: the two APIs differ (main's Engine takes a SchedulerConfig and ``poll``, the renovated one not)
    Engine: Any = engine_module.Engine
    store_plan: Any = engine_module.store_plan
    try:  # the renovated API: a Poller schedules the engine's polls
        Poller: Any = importlib.import_module("trackcheck.scheduling").Poller
    except (ImportError, AttributeError):
        Poller = None  # main: the engine schedules its own polls

    _check_origin(trackcheck_origin(config.src), config.src, config.side)
    api = "Poller" if Poller is not None else "Engine"
    state.update(api=api, trackcheck_file=origin["file"])

    # -- submission, on an engine that does not poll
    text = plan_text(config.source_database, config.interval)
    if Poller is not None:
        submitter = Engine(config.state_url)
    else:
        submitter = Engine(config.state_url, SchedulerConfig(), poll=False)
    submitter.start()
    state["phase"] = "submitting"
    try:
        plan_id, _ = store_plan(submitter, text, "bench-b7.yaml", None)
        for first in range(0, config.n, config.batch):
            batch = [
                RunRequest(params={"test_id": b1_polling.test_id(j)}, expect=b1_polling.expected_events(j))
                for j in range(first, min(config.n, first + config.batch))
            ]
            began = time.perf_counter()
            submitter.submit_many(plan_id, batch)
            spent = time.perf_counter() - began
            with lock:
                state["submitted"] += len(batch)
                state["submit_s"] += spent
            del batch
    finally:
        submitter.shutdown()
    del submitter
    gc.collect()
    with lock:
        state["phase"] = "polling"
        state["submit_rate"] = state["submitted"] / state["submit_s"] if state["submit_s"] > 0 else float("nan")
        state["submit_peak_rss_mb"] = common.peak_rss_mb()
    submitted.set()
    print(SUBMITTED_MARK + json.dumps(state), flush=True)

    # -- polling
    done = threading.Event()
    ticks: list[dict[str, Any]] = []
    skips = {"late": 0, "busy": 0, "other": 0}

    class MeasuredEngine(common.CountsWriterCpu, Engine):
        """The Engine, with each group poll timed (wall, CPU) as B1 does; nothing else changes."""

        writer_cpu = common.WriterCpu()

        def poll_group(self, group: str, *args: Any, **kwargs: Any) -> Any:
            began, cpu, thread_cpu = time.time(), time.process_time(), time.thread_time()
            self.writer_cpu.begin_tick()
            summary = super().poll_group(group, *args, **kwargs)
            polled, remaining = summary_field(summary, "polled"), summary_field(summary, "remaining")
            tick = {
                "start": began,
                "end": time.time(),
                "cpu": time.process_time() - cpu,
                "thread_cpu": time.thread_time() - thread_cpu + self.writer_cpu.tick_cpu(),
                "polled": polled,
                "remaining": remaining,
                "fresh_only": bool(kwargs.get("fresh_only", args[0] if args else False)),
                "source_error": summary_field(summary, "retry_in") is not None,
            }
            with lock:
                ticks.append(tick)
            if remaining == 0:
                done.set()
            return summary

    def on_skip(event: JobEvent) -> None:
        kind = "other" if not str(event.job_id).startswith("poll:") else "late"
        if kind == "late" and event.code == EVENT_JOB_MAX_INSTANCES:
            kind = "busy"
        with lock:
            skips[kind] += 1

    began, cpu = time.time(), time.process_time()
    stop: Callable[[], None]
    if Poller is not None:
        engine = MeasuredEngine(config.state_url)
        poller = Poller(engine, SchedulerConfig())
        poller.start()
        scheduler, stop = poller.scheduler, poller.shutdown
    else:
        engine = MeasuredEngine(config.state_url, SchedulerConfig())
        engine.start()
        scheduler, stop = engine.scheduler, engine.shutdown
    if scheduler is None:
        raise RuntimeError("the engine started without a scheduler")
    scheduler.add_listener(on_skip, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES)
    started_cpu = time.process_time() - cpu
    common.emit_ready()
    finished = done.wait(config.deadline)
    stopped_at = time.time()
    wall, cpu_total = stopped_at - began, time.process_time() - cpu
    with lock:
        result: dict[str, Any] = {
            **state,
            "all_done": finished,
            "stopped": "" if finished else f"runs still waiting {config.deadline:g} s after READY",
            "stopped_at": stopped_at,
            "ticks": sorted(ticks, key=lambda t: t["start"]),
            "phase_wall": wall,
            "phase_cpu": cpu_total,
            "start_cpu": started_cpu,
            "peak_rss_mb": common.peak_rss_mb(),
            "late_polls": skips["late"],
            "busy_polls": skips["busy"],
            "other_jobs_skipped": skips["other"],
        }
    result["origin_end"] = trackcheck_origin(config.src)  # modules imported while polling, too
    return _stop_after(result, stop)


def _stop_after(result: dict[str, Any], stop: Callable[[], None]) -> dict[str, Any]:
    """Stop polling, but give up after a while: a tick of many runs still in progress is not waited for (the
    parent counts only the runs that passed before ``stopped_at``)."""
    stopper = threading.Thread(target=stop, name="b7-stop", daemon=True)
    stopper.start()
    stopper.join(timeout=30)
    result["clean_stop"] = not stopper.is_alive()
    return result


def child_main(raw: str) -> None:
    _quiet_logging()
    common.emit_result(run_child(ChildConfig(**json.loads(raw))))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no waiting for a poll thread that a stop left running


# -- the parent ---------------------------------------------------------------------------------------------


@dataclass
class SideResult:
    """One side at one N, with the figures the report shows (NaN where the side got no figure)."""

    side: str  # "trackcheck" (the working tree) or "main" (REFERENCE)
    n: int
    interval: float
    api: str  # "Engine" (main's) or "Poller" (the renovated one)
    trackcheck_file: str  # where the child imported trackcheck from
    finished: bool  # every run detected before the deadline
    stopped: str  # why not, when not
    detected: int  # runs whose stage passed before the child stopped (and whose rows' commit time is known)
    submitted: int
    submit_s: float  # seconds inside Engine.submit_many
    submit_rate: float  # runs submitted per second in-process
    latency_p50: float
    latency_p99: float
    latency_max: float
    late_polls: int  # EVENT_JOB_MISSED of poll jobs (later than the misfire grace time)
    busy_polls: int  # EVENT_JOB_MAX_INSTANCES of poll jobs (the previous poll still running)
    other_jobs_skipped: int  # the same events of the bookkeeping jobs (tc:sync, tc:prune)
    peak_rss_mb: float  # the child's peak RSS (VmHWM): submission and polling
    submit_peak_rss_mb: float  # the same when polling began
    cpu_per_tick: float  # thread CPU of the tick that polled all N waiting runs
    background_cpu_rate: float  # process CPU seconds per second outside ticks
    core_share_at_default: float  # (cpu_per_tick + background over 58 s) / 58 s
    full_tick_s: float  # wall time of that tick
    full_tick_polled: int
    ticks: int
    polling_s: float  # from the start of polling to the stop
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def missed_polls(self) -> int:
        return self.late_polls + self.busy_polls

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "missed_polls": self.missed_polls}


@dataclass
class B7Result:
    interval: float
    land_window: float
    reference: str  # REFERENCE as written
    reference_commit: str  # what it resolved to
    tree: str  # what the trackcheck side was: path, HEAD, uncommitted changes under src
    sides: list[SideResult]

    def pairs(self) -> list[tuple[int, SideResult, SideResult]]:
        by = {(s.side, s.n): s for s in self.sides}
        return [(n, by[("trackcheck", n)], by[("main", n)]) for n in sorted({s.n for s in self.sides})]

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "sides"}, "sides": [s.to_dict() for s in self.sides]}


def _git(*args: str) -> str:
    completed = subprocess.run(["git", "-C", str(common.REPO), *args], capture_output=True, text=True, check=True)
    return completed.stdout.strip()


def materialise(ref: str, into: Path) -> Path:
    """``git archive <ref> src | tar -x -C <into>`` (nothing in the repository changes); returns its src."""
    archive = subprocess.Popen(["git", "-C", str(common.REPO), "archive", ref, "src"], stdout=subprocess.PIPE)
    assert archive.stdout is not None
    tar = subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, capture_output=True, check=False)
    archive.stdout.close()
    if archive.wait() != 0 or tar.returncode != 0:
        raise RuntimeError(f"cannot materialise {ref}: {tar.stderr.decode(errors='replace')}")
    src = into / "src"
    if not (src / "trackcheck" / "__init__.py").is_file():
        raise RuntimeError(f"{ref} has no src/trackcheck")
    return src


def tree_digest(src: Path) -> str:
    """A short SHA-256 of the tree's files (paths and contents, caches left out): which working tree was
    measured, while it changes under another session's hands."""
    digest = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(src)).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:  # removed meanwhile
            continue
    return digest.hexdigest()[:12]


def describe_tree(src: Path) -> str:
    """The working tree side, in words: its path, HEAD, how many paths under it differ from HEAD, a digest."""
    if not src.is_relative_to(common.REPO):
        return f"`{src}` (outside this repository; files digest {tree_digest(src)})"
    head = _git("rev-parse", "--short", "HEAD")
    # --no-optional-locks: a read that never writes the index (another session works in this repository)
    changed = _git("--no-optional-locks", "status", "--porcelain", "--", str(src)).splitlines()
    return (
        f"`{src}` at HEAD {head} with {len(changed)} changed or new path(s) under it (files digest {tree_digest(src)})"
    )


class _Lines:
    """The child's stdout read on a thread of its own, so that the parent can wait for a line with a timeout."""

    def __init__(self, child: common.Child) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.ended = False
        stdout = child.process.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                self.lines.put(line)
            self.lines.put(None)

        threading.Thread(target=pump, name="b7-lines", daemon=True).start()

    def wait_for(self, marks: tuple[str, ...], timeout: float) -> tuple[str, str] | None:
        """The first line starting with one of ``marks``: (mark, the rest); None at the end or the timeout."""
        until = time.monotonic() + timeout
        while not self.ended:
            try:
                line = self.lines.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                self.ended = True
                break
            for mark in marks:
                if line.startswith(mark):
                    return mark, line[len(mark) :].strip()
        return None


def finished_times(state_database: str) -> dict[str, float]:
    """When each run's stage passed (``tc_run_stages.finished_at``, epoch seconds), by test_id."""
    query = (
        "SELECT r.params ->> 'test_id', extract(epoch FROM s.finished_at) FROM tc_run_stages s "
        "JOIN tc_runs r ON r.id = s.run_id WHERE s.status = 'passed' AND s.idx = 0"
    )
    with psycopg.connect(common.dsn(state_database), autocommit=True) as connection:
        return {str(t): float(f) for t, f in connection.execute(query).fetchall()}


def measure_side(side: str, src: Path, n: int, interval: float, land_window: float, template: str) -> SideResult:
    """One side at one N: a fresh source clone, a fresh PostgreSQL state database, the child, the writer."""
    deadline = deadline_for(interval, land_window)
    submit_limit = submit_limit_for(n)
    pythonpath = os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p)
    raw: dict[str, Any] = {}
    commits: dict[str, float] = {}
    with (
        common.fresh_database("tc_bench_b7src", template) as source,
        common.fresh_database("tc_bench_b7state") as state_db,
    ):
        config = ChildConfig(
            side, str(src), n, interval, deadline, submit_limit, source, common.sqlalchemy_url(state_db)
        )
        child = common.spawn_child("benchmarks.b7_scale", asdict(config), env={"PYTHONPATH": pythonpath})
        lines = _Lines(child)
        writer: threading.Thread | None = None
        try:
            got = lines.wait_for((ORIGIN_MARK,), GRACE_S)
            if got is None:
                raise RuntimeError(f"B7 {side} N={n:,}: the child did not start:\n{child.stderr_tail()}")
            _check_origin(json.loads(got[1]), str(src), side)
            got = lines.wait_for((SUBMITTED_MARK, common.RESULT_MARK), submit_limit + GRACE_S)
            if got is not None and got[0] == SUBMITTED_MARK:
                raw = json.loads(got[1])
                got = lines.wait_for((common.READY_MARK, common.RESULT_MARK), GRACE_S)
            if got is not None and got[0] == common.READY_MARK:
                t0 = time.time()
                offsets = b1_polling.land_offsets(n, land_window)
                writer = threading.Thread(
                    target=b1_polling.write_rows, args=(source, offsets, t0, commits), name="b7-writer", daemon=True
                )
                writer.start()
                got = lines.wait_for((common.RESULT_MARK,), deadline + GRACE_S)
            if got is not None and got[0] == common.RESULT_MARK:
                raw = json.loads(got[1])
            else:
                child.kill()
                raw.update(all_done=False, stopped=raw.get("stopped") or _ended(child, raw))
            try:
                child.process.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
            if child.process.returncode not in (0, None) and not raw.get("stopped"):
                raw.update(all_done=False, stopped=_ended(child, raw))
        finally:
            child.kill()
            if writer is not None:
                writer.join(timeout=land_window + 60)
        if raw.get("stopped"):
            tail = child.stderr_tail(15).strip()
            common.log(f"B7 {side} N={n:,} did not finish: {raw['stopped']}" + (f"\n{tail}" if tail else ""))
        finished = finished_times(state_db)
    if "origin_end" in raw:
        _check_origin(raw["origin_end"], str(src), side)
    return _figures(side, n, interval, raw, finished, commits)


def _ended(child: common.Child, raw: dict[str, Any]) -> str:
    code = child.process.poll()
    where = raw.get("phase", "starting")
    return f"the child ended without its figures while {where} (exit code {code})"


def _figures(
    side: str, n: int, interval: float, raw: dict[str, Any], finished: dict[str, float], commits: dict[str, float]
) -> SideResult:
    nan = float("nan")
    stopped_at = raw.get("stopped_at", math.inf)
    latencies = [finished[t] - commits[t] for t in commits if t in finished and finished[t] <= stopped_at]
    ticks = [t for t in raw.get("ticks", []) if t["polled"] > 0]
    cpu_per_tick = background = share = full_s = nan
    full_polled = 0
    if ticks and "phase_cpu" in raw:  # B1's method, on B1's code: the same figures mean the same thing
        b1 = b1_polling._figures("trackcheck", n, interval, raw, latencies, 0, 0.0)
        cpu_per_tick, background, share = b1.cpu_per_tick, b1.background_cpu_rate, b1.core_share_at_default
        full_s, full_polled = b1.round_s, int(b1.extra["full_tick_polled"])
    all_done = bool(raw.get("all_done")) and len(latencies) == n
    stopped = raw.get("stopped") or ("" if all_done else f"{n - len(latencies):,} runs not detected")
    return SideResult(
        side=side,
        n=n,
        interval=interval,
        api=raw.get("api", "?"),
        trackcheck_file=raw.get("trackcheck_file", "?"),
        finished=all_done,
        stopped=stopped,
        detected=len(latencies),
        submitted=int(raw.get("submitted", 0)),
        submit_s=float(raw.get("submit_s", nan)),
        submit_rate=float(raw.get("submit_rate", nan)),
        latency_p50=common.percentile(latencies, 50),
        latency_p99=common.percentile(latencies, 99),
        latency_max=max(latencies) if latencies else nan,
        late_polls=int(raw.get("late_polls", 0)),
        busy_polls=int(raw.get("busy_polls", 0)),
        other_jobs_skipped=int(raw.get("other_jobs_skipped", 0)),
        peak_rss_mb=float(raw.get("peak_rss_mb", nan)),
        submit_peak_rss_mb=float(raw.get("submit_peak_rss_mb", nan)),
        cpu_per_tick=cpu_per_tick,
        background_cpu_rate=background,
        core_share_at_default=share,
        full_tick_s=full_s,
        full_tick_polled=full_polled,
        ticks=len(ticks),
        polling_s=float(raw.get("phase_wall", nan)),
        extra={"clean_stop": raw.get("clean_stop"), "source_errors": sum(t["source_error"] for t in ticks)},
    )


def measure(
    ns: tuple[int, ...], interval: float, land_window: float, *, tree: Path | None = None, reference: str = REFERENCE
) -> B7Result:
    """Both sides at every N (trackcheck first, then main), each in fresh databases; the reference tree is
    materialised once, into a temporary directory removed afterwards."""
    tree = (tree or common.REPO / "src").resolve()
    commit = _git("rev-parse", "--verify", f"{reference}^{{commit}}")
    folder = Path(tempfile.mkdtemp(prefix="trackcheck-b7-"))
    template = b1_polling.create_template()
    sides: list[SideResult] = []
    try:
        trees = {"trackcheck": tree, "main": materialise(commit, folder)}
        description = describe_tree(tree)
        common.log(f"B7: trackcheck = {description}; main = {reference} ({commit[:12]}) in {trees['main']}")
        for n in ns:
            for side in SIDES:
                common.log(f"B7 {side} N={n:,} (interval {interval:g}s, rows land within {land_window:g}s)")
                result = measure_side(side, trees[side], n, interval, land_window, template)
                sides.append(result)
                common.log(
                    f"B7 {side} N={n:,} [{result.api}]: {result.submit_rate:,.0f} runs/s submitted, detected "
                    f"{result.detected:,}/{n:,}, p99 {result.latency_p99:.2f}s, missed polls {result.missed_polls}, "
                    f"peak RSS {result.peak_rss_mb:.0f} MB, CPU/tick {result.cpu_per_tick:.3f}s, "
                    f"core at 58 s {result.core_share_at_default * 100:.2f} %"
                )
    finally:
        b1_polling.drop_database(template)
        shutil.rmtree(folder, ignore_errors=True)
    return B7Result(interval, land_window, reference, commit, description, sides)


def missing(result: B7Result, *, strict: bool) -> list[str]:
    """Every figure the report needs that is absent (``strict``, the quick run: every run detected, too)."""
    problems: list[str] = []
    if {(s.side, s.n) for s in result.sides} != {(side, n) for side in SIDES for n in {s.n for s in result.sides}}:
        problems.append("B7: a side or an N is missing")
    for s in result.sides:
        where = f"B7 {s.side} N={s.n}"
        if not s.finished:
            if strict:
                problems.append(f"{where}: did not finish ({s.stopped})")
            else:
                continue  # at a large N, a side that did not finish is reported as such, with what it measured
        for name, value in s.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{where}: {name} is {value}")
        if s.detected == 0:
            problems.append(f"{where}: no run was detected")
    return problems


if __name__ == "__main__":
    child_main(sys.argv[1])
