"""The ``trackcheck`` command line.

Exit codes are a contract with CI pipelines:
0 every stage passed (the warnings of checks of ``severity: warn`` are printed; they do not fail a run) ·
1 verification failed (a stage failed or timed out) · 2 invalid plan, parameters or usage · 3 a source (or
the state database) could not be read · 130 interrupted by Ctrl-C or SIGTERM (the run is cancelled, reports are
written).
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trackcheck.errors import ConfigError, TrackcheckError
from trackcheck.logs import LOG_FORMATS, LogFormat, log_context, log_to_stderr
from trackcheck.plan.durations import parse_duration
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.store.database import DEFAULT_URL, normalize_url

# The engine, the scheduler and the state database's models are imported by the commands that use them: every
# command starts without them, and `diff` runs without them (half its memory, benchmark B4).
if TYPE_CHECKING:
    from trackcheck.engine.core import Engine, PlanSetup
    from trackcheck.engine.result import RunResult, StageResult
    from trackcheck.recon.result import Reconciliation
    from trackcheck.scheduling import SchedulerConfig
    from trackcheck.sources.sql import SqlSource
    from trackcheck.store.repository import Retention

EXIT = {"passed": 0, "failed": 1, "error": 3, "cancelled": 130}
COLOURS = {
    "passed": "green",
    "failed": "red",
    "error": "magenta",
    "waiting": "yellow",
    "pending": "dim",
    "skipped": "dim",
    "running": "yellow",
    "cancelled": "dim",
}
err = Console(stderr=True, soft_wrap=True)  # soft wrap: CI logs keep one line per message
#: the console lines of a command, as log records when lines are JSON (see ``_logging``)
console = logging.getLogger("trackcheck.console")
#: where ``_logging`` keeps the chosen log format, in click's context meta (shared by a command and its group)
LOG_FORMAT_KEY = "trackcheck.log_format"
VISIBLE_IN_PS = (
    "a password on the command line is visible in ps: put it in TRACKCHECK_DB, or in a file named by "
    "--db-password-file / TRACKCHECK_DB_PASSWORD_FILE"
)
db_password_file_option = click.option(
    "--db-password-file",
    type=click.Path(dir_okay=False),
    envvar="TRACKCHECK_DB_PASSWORD_FILE",
    help="A file holding the state database's password, set on the --db URL (which must not hold one).",
)


@contextmanager
def _errors(report: Callable[[BaseException, int], None] | None = None) -> Iterator[None]:
    """Every TrackcheckError becomes one readable line on stderr and its exit code; ``report`` (the reports
    ``run`` was asked for) is given the error before the process exits."""
    try:
        yield
    except TrackcheckError as exc:
        line = f"{type(exc).__name__}: {exc}"
        rich = f"[bold red]error:[/] {escape(line)}"
        _say(line, rich=rich, level=logging.ERROR, plan=exc.context.get("plan"), stage=exc.context.get("stage"))
        if report is not None:
            report(exc, exc.exit_code)
        sys.exit(exc.exit_code)


def _refuse_password_in_argv(db: str | None) -> None:
    """ConfigError (exit 2) if ``--db`` was typed with a password: every user of the machine sees the command
    lines of its processes. TRACKCHECK_DB may hold one (the environment is not in ps)."""
    if db is None or click.get_current_context().get_parameter_source("db") is not ParameterSource.COMMANDLINE:
        return
    try:
        password = make_url(normalize_url(db)).password
    except ArgumentError:
        password = None
    if password or mask_url_passwords(db) != db:
        raise ConfigError(VISIBLE_IN_PS)


def _state_url(db: str, password_file: str | None) -> str:
    """The state database URL of ``--db`` (or TRACKCHECK_DB) and ``--db-password-file``."""
    from trackcheck.service.config import state_database_url

    _refuse_password_in_argv(db)
    return state_database_url(db, password_file)


def _logging(verbose: int, quiet: bool = False, log_format: LogFormat | None = None) -> None:
    """Log to stderr: warnings (errors only with ``quiet``), one line per poll at -v (one per chunk for the runs that
    again found nothing), debug at -vv; as text, or as JSON lines with ``log_format`` json (None: as chosen before).

    The console lines of a command (a run's progress and summary, the error it stopped on) follow the format:
    printed as they are in text, log records of ``trackcheck.console`` in JSON, so that stderr is one format."""
    context = click.get_current_context()
    if log_format is None:
        log_format = context.meta.get(LOG_FORMAT_KEY, "text")
    context.meta[LOG_FORMAT_KEY] = log_format
    level = (
        logging.ERROR if quiet else logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    )
    log_to_stderr(level, log_format)
    console.setLevel(logging.INFO)  # what the text format prints whatever the level


def _json_logs() -> bool:
    """Whether this command logs JSON lines (``_logging``), so its console lines must be log records too."""
    context = click.get_current_context(silent=True)
    return context is not None and context.meta.get(LOG_FORMAT_KEY) == "json"


def _say(
    text: str,
    *,
    rich: str | None = None,
    style: str | None = None,
    level: int = logging.INFO,
    run_id: str | None = None,
    plan: str | None = None,
    stage: str | None = None,
) -> None:
    """One console line on stderr: in text, ``rich`` (rich markup) if given, else ``text`` as it is, in ``style``;
    in JSON, ``text`` as a log record at ``level`` carrying the run, plan and stage it is about."""
    if _json_logs():
        with log_context(run_id=run_id, plan=plan, stage=stage):
            console.log(level, text.strip())  # the indents of the text layout say nothing in JSON
    elif rich is not None:
        err.print(rich, style=style, markup=True, highlight=False)
    else:
        err.print(text, style=style, markup=False, highlight=False)


def _log_format_flag() -> LogFormat | None:
    """``--log-format`` (or TRACKCHECK_LOG_FORMAT) if given: it wins over log_format in trackcheck.toml."""
    value: LogFormat | None = click.get_current_context().find_root().params.get("log_format")
    return value


def _log_as(log_format: LogFormat) -> None:
    """Log in the service configuration's ``log_format`` from here on, at the verbosity already chosen."""
    if log_format != click.get_current_context().meta.get(LOG_FORMAT_KEY):
        _logging(click.get_current_context().find_root().params.get("verbose") or 0, log_format=log_format)


@click.group()
@click.version_option(package_name="trackcheck")
@click.option("-v", "--verbose", count=True, help="-v: one log line per poll; -vv: debug.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    envvar="TRACKCHECK_LOG_FORMAT",
    show_envvar=True,
    help="Log lines (and console lines) on stderr as text (the default), or as JSON lines with the run id, plan "
    "and stage they are about (or log_format in trackcheck.toml, for serve and worker).",
)
def main(verbose: int, log_format: LogFormat | None) -> None:
    """Prove that tracking events arrive, complete and unchanged, in every system of a pipeline."""
    _logging(verbose, log_format=log_format or "text")


config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A trackcheck.toml whose [connections] plans may name (default: ./trackcheck.toml if present).",
)


def _plan_setup(config_file: str | None) -> PlanSetup:
    """The connections and secret key of trackcheck.toml (and TRACKCHECK_*), as the service would use them:
    a plan that names a connection runs the same in CI as on the service."""
    from trackcheck.service.config import load_config

    return load_config(config_file).plan_setup()


@main.command()
@click.argument("plans", nargs=-1, required=True, type=click.Path(dir_okay=False))
@config_option
def validate(plans: tuple[str, ...], config_file: str | None) -> None:
    """Check plan files without connecting to anything (exit 2 at the first invalid one)."""
    from trackcheck.connections import Connections
    from trackcheck.loader import load_plan

    with _errors():
        setup = _plan_setup(config_file)
        connections = Connections(setup.connections)
        for path in plans:
            plan = load_plan(path, connections=connections, limits=setup.limits)
            chain = " → ".join(stage.name for stage in plan.stages)
            count = f"{len(plan.stages)} stage{'s' if len(plan.stages) != 1 else ''}"
            click.echo(f"{path}: plan {plan.name!r} is valid ({count}: {chain})")


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="-p/--param")
        params[name.strip()] = value
    return params


def _expect(path: str | None) -> list[dict[str, Any]] | None:
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
        events = (
            [json.loads(line) for line in text.splitlines() if line.strip()]
            if path.endswith(".jsonl")
            else json.loads(text)
        )
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"cannot read expected events from {path}: {exc}", param_hint="--expect") from None
    if not isinstance(events, list):
        raise click.BadParameter("expected events must be a JSON list of objects", param_hint="--expect")
    return events


@main.command()
@click.argument("plan", type=click.Path(dir_okay=False))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="A run parameter (repeatable).")
@click.option(
    "--expect",
    "expect_file",
    type=click.Path(dir_okay=False),
    help="Expected events (JSON list or JSONL) instead of the plan's 'expect'.",
)
@click.option("--interval", help="Poll every stage this often (e.g. 1s), overriding the plan.")
@click.option("--timeout", help="Time out every stage after this long (e.g. 30s), overriding the plan.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document on stdout.")
@click.option(
    "--junit",
    type=click.Path(dir_okay=False),
    help="Write a JUnit XML report (one testcase per stage; one errored testcase if the run could not start).",
)
@click.option(
    "--annotations",
    type=click.Choice(["github"]),
    help="Also print failed and errored stages (and warnings) as GitHub Actions annotations, on stderr.",
)
@click.option(
    "--heartbeat",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    metavar="SECONDS",
    help="Without a terminal, print what each waiting stage waits for this often (0: never).",
)
@click.option("-v", "--verbose", count=True, help="-v: one log line per poll; -vv: debug (as before 'run').")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary line and errors.")
@click.option(
    "--db",
    default=DEFAULT_URL,
    show_default=True,
    envvar="TRACKCHECK_DB",
    help="State database URL (SQLite file, PostgreSQL or MariaDB), without a password.",
)
@db_password_file_option
@config_option
@click.pass_context
def run(
    ctx: click.Context,
    plan: str,
    params: tuple[str, ...],
    expect_file: str | None,
    interval: str | None,
    timeout: str | None,
    as_json: bool,
    junit: str | None,
    annotations: str | None,
    heartbeat: float,
    verbose: int,
    quiet: bool,
    db: str,
    db_password_file: str | None,
    config_file: str | None,
) -> None:
    """Verify one run of PLAN in the foreground, with a live view of every stage."""
    from trackcheck.engine.core import Engine
    from trackcheck.foreground import overrides_from, start_run
    from trackcheck.scheduling import Poller, SchedulerConfig

    verbose += ctx.find_root().params.get("verbose") or 0
    if quiet and verbose:
        raise click.UsageError("-q/--quiet and -v/--verbose exclude each other")
    if verbose or quiet:
        _logging(verbose, quiet)
    reports = _Reports(plan, junit, as_json, annotations)
    result: RunResult | None = None
    try:
        with _errors(reports.error), _terminate_as_interrupt():
            try:
                reports.params = _params(params)
                expected = _expect(expect_file)
            except click.ClickException as exc:
                reports.error(exc, exc.exit_code)
                raise
            setup = _plan_setup(config_file)  # its limits: min_interval from trackcheck.toml or TRACKCHECK_MIN_INTERVAL
            overrides = overrides_from(interval, timeout, limits=setup.limits)
            engine = Engine(_state_url(db, db_password_file), setup=setup)
            poller = Poller(engine, SchedulerConfig(jobstore="memory"), resume=False).start()
            run_id = None
            try:
                run_id = start_run(engine, plan, reports.params, expected, overrides)
                result = _watch(engine, run_id, heartbeat=0 if quiet else heartbeat, quiet=quiet)
            except KeyboardInterrupt:
                if run_id is None:
                    raise
                engine.cancel(run_id)
                result = engine.result(run_id)
            finally:
                poller.shutdown(wait=False)
    except KeyboardInterrupt:  # before the run was submitted: nothing was verified
        _say("interrupted before the run started", level=logging.WARNING)
        reports.error(KeyboardInterrupt("interrupted before the run started"), EXIT["cancelled"])
        sys.exit(EXIT["cancelled"])
    _summary(result, quiet=quiet)
    reports.result(result)
    sys.exit(EXIT.get(result.status, 3))


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI system cancelling the job, ``docker stop``) ends a run as Ctrl-C does: the run is stored
    cancelled and the reports are written before the CI system's kill -9 comes."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class _Reports:
    """What ``run`` writes for CI besides its console output: ``--junit``, ``--json`` and ``--annotations``,
    for a run's result and equally for a run that could not start (exit 2, 3 or 130)."""

    plan_file: str
    junit: str | None
    as_json: bool
    annotations: str | None
    params: dict[str, str] = field(default_factory=dict)
    began: datetime = field(default_factory=lambda: datetime.now(UTC))

    def result(self, result: RunResult) -> None:
        from trackcheck import ci
        from trackcheck.junit import write_junit

        if self.junit:
            write_junit(result, self.junit)
        if self.as_json:
            click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        if self.annotations == "github":
            for line in ci.github_annotations(result, self.plan_file):
                err.print(line, markup=False, highlight=False, soft_wrap=True)

    def error(self, exc: BaseException, exit_code: int) -> None:
        """The run could not start: ``exc`` is the reason."""
        from trackcheck import ci
        from trackcheck.junit import write_junit_error

        outline = ci.plan_outline(self.plan_file)
        context: dict[str, str] = dict(getattr(exc, "context", {}))
        name = outline.name or context.get("plan") or self.plan_file
        message = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
        status = {2: "invalid", 130: "cancelled"}.get(exit_code, "error")
        if self.junit:
            seconds = (datetime.now(UTC) - self.began).total_seconds()
            write_junit_error(self.junit, name, type(exc).__name__, message, began=self.began, seconds=seconds)
        if self.as_json:
            document: dict[str, Any] = {
                "run_id": None,
                "plan": name,
                "plan_file": self.plan_file,
                "status": status,
                "params": self.params,
                "stages": [],
                "error": {"type": type(exc).__name__, "message": message, "exit_code": exit_code, "context": context},
            }
            click.echo(json.dumps(document, indent=2, default=str))
        if self.annotations == "github" and exit_code != EXIT["cancelled"]:
            line = outline.line_of(context.get("stage"), message)
            title = "trackcheck: invalid plan" if exit_code == 2 else "trackcheck: could not start"
            err.print(ci.workflow_command("error", message, self.plan_file, line, title), markup=False, highlight=False)


def _watch(engine: Engine, run_id: str, *, heartbeat: float = 0, quiet: bool = False) -> RunResult:
    from trackcheck import ci
    from trackcheck.foreground import wait_for
    from trackcheck.store.repository import aware

    if quiet:
        return wait_for(engine, run_id, every=0.5)
    if not err.is_terminal or _json_logs():  # JSON lines: no live table between them
        seen: dict[str, tuple[str, int | None]] = {}
        beat = time.monotonic()

        def progress(result: RunResult) -> None:
            nonlocal beat
            for stage in result.stages:
                state = (stage.status, stage.found)
                if stage.status != "pending" and seen.get(stage.name) != state:
                    seen[stage.name] = state
                    _say(_progress_line(stage), run_id=run_id, plan=result.plan, stage=stage.name)
            if heartbeat and time.monotonic() - beat >= heartbeat and not result.finished:
                beat = time.monotonic()
                deadlines = {row.name: row.deadline for row in engine.store.run_stages(run_id)}
                now = datetime.now(UTC)
                for stage in result.stages:
                    if stage.status == "waiting":
                        line = ci.heartbeat_line(stage, now, aware(deadlines.get(stage.name)))
                        _say(line, run_id=run_id, plan=result.plan, stage=stage.name)

        return wait_for(engine, run_id, progress, every=min(0.5, heartbeat or 0.5))
    with Live(console=err, refresh_per_second=4, transient=False) as live:
        return wait_for(engine, run_id, lambda result: live.update(_table(result)))


def _progress_line(stage: StageResult) -> str:
    """One line per change of a stage, for logs and CI consoles (no terminal, no live table)."""
    facts = [f"poll {stage.attempts}"] if stage.attempts else ["first poll due"] if stage.status == "waiting" else []
    if stage.expected is not None:
        facts.append(f"found {stage.found}/{stage.expected}")
    shown = f" ({', '.join(facts)})" if facts else ""  # a skipped stage was never polled and never will be
    detail = f" - {stage.reason}" if stage.reason else ""
    return f"{stage.name}: {stage.status}{shown}{detail}"


def _table(result: RunResult) -> Table:
    table = Table(title=f"{result.plan} · run {result.run_id[:8]} · {result.status}", title_justify="left")
    for column in ("stage", "status", "attempts", "found/expected", "waited", "detail"):
        table.add_column(column)
    now = datetime.now(UTC)
    for stage in result.stages:
        waited = ""
        if stage.started_at:
            end = datetime.fromisoformat(stage.finished_at) if stage.finished_at else now
            waited = f"{(end - datetime.fromisoformat(stage.started_at)).total_seconds():.0f}s"
        found = f"{stage.found}/{stage.expected}" if stage.expected is not None else ""
        colour = COLOURS.get(stage.status, "white")
        table.add_row(
            stage.name,
            f"[{colour}]{stage.status}[/]",
            str(stage.attempts),
            found,
            waited,
            (stage.reason or "")[:100],
        )
    return table


def _summary(result: RunResult, *, quiet: bool = False) -> None:
    """The result line, then the reason and evidence of each failed stage and the warnings; with ``quiet``
    only the result line and the reasons of failed and errored stages."""
    colour = COLOURS.get(result.status, "white")
    say = functools.partial(_say, run_id=result.run_id, plan=result.plan)
    headline = f"{result.plan} run {result.run_id}"
    say(
        f"{result.status.upper()} {headline}",
        rich=f"[bold {colour}]{result.status.upper()}[/] {escape(headline)}",
    )
    for stage in result.stages:
        if stage.status in ("failed", "error"):
            say(f"  {stage.name}: {stage.reason}", stage=stage.name)
        if quiet:
            continue
        if stage.status in ("failed", "error"):
            for m in stage.mismatches[:10]:
                say(
                    f"    mismatch {m['key']}.{m['field']}: expected {m['expected']!r}, got {m['actual']!r}",
                    stage=stage.name,
                )
            for name in ("missing", "unexpected", "duplicates"):
                keys = getattr(stage, name)
                if keys:
                    say(f"    {name}: {', '.join(map(str, keys[:20]))}", stage=stage.name)
        # checks of severity: warn, which let the stage pass: shown whatever the stage's status
        for warning in stage.warnings[:10]:
            say(f"  {stage.name}: warning: {warning}", style="yellow", level=logging.WARNING, stage=stage.name)
        if len(stage.warnings) > 10:
            say(f"  {stage.name}: {len(stage.warnings) - 10} more warnings", stage=stage.name)


@main.command()
@click.argument("run_id")
@click.option("--db", default=DEFAULT_URL, show_default=True, envvar="TRACKCHECK_DB")
@db_password_file_option
def show(run_id: str, db: str, db_password_file: str | None) -> None:
    """Print the JSON result of a run stored in the state database."""
    from trackcheck.engine.core import Engine

    with _errors():
        engine = Engine(_state_url(db, db_password_file))
        engine.start()
        try:
            click.echo(json.dumps(engine.result(run_id).to_dict(), indent=2, default=str))
        finally:
            engine.shutdown()


@main.command()
@click.option("--db", help=f"State database URL (default: db of the configuration, else {DEFAULT_URL}).")
@db_password_file_option
@config_option
@click.option(
    "--workers", type=click.IntRange(1, 200), help="Threads polling sources (default: [scheduler] workers, 10)."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    help="Serve this worker's Prometheus metrics (its source queries, the poll queue) on this port.",
)
@click.option("--metrics-host", default="127.0.0.1", show_default=True, help="Address of --metrics-port.")
def worker(
    db: str | None,
    db_password_file: str | None,
    config_file: str | None,
    workers: int | None,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Poll every unfinished run in the state database, in the foreground (Ctrl-C to stop).

    Backend ``apscheduler`` (the default): takes the same lease as ``serve``; while another process polls,
    this one waits on standby. Backend ``procrastinate``: runs poll jobs from the state database's queue,
    as many workers on as many machines as you like; one of them (or of ``serve``) plans them.
    """
    from trackcheck.engine.core import Engine
    from trackcheck.scheduling import Poller
    from trackcheck.scheduling.lease import Leadership, lease_for
    from trackcheck.service.config import load_config, state_database_url

    with _errors():
        if db is not None:
            _refuse_password_in_argv(db)
        # the same state database as ``serve`` with the same trackcheck.toml: flags, then TRACKCHECK_*, then the file
        config = load_config(config_file, db=db, db_password_file=db_password_file, log_format=_log_format_flag())
        _log_as(config.log_format)
        url = state_database_url(config.db, config.db_password_file)
        setup = config.plan_setup()  # the service's connections, secret key and rules for uploaded plans
        chosen = config.scheduler.model_copy(update={"workers": workers} if workers else {})
        metrics = (metrics_host, metrics_port) if metrics_port else None
        if chosen.backend == "procrastinate":
            _distributed_worker(url, chosen, config.retention_policy(), setup, metrics)
            return
        scheduler = chosen.model_copy(update={"scheduler": "blocking"})
        engine = Engine(url, setup=setup)
        if metrics is not None:
            _serve_metrics(engine, scheduler, metrics)
        poller = Poller(engine, scheduler, retention=config.retention_policy()).start()
        lease = lease_for(engine.store.engine)
        # the lease stays watched while the scheduler blocks this thread: lost, the scheduler pauses (its
        # polls would be refused anyway) until this process takes the lease again
        leadership = Leadership(lease, poller.lead, poller.follow)
        try:
            if not lease.try_acquire():
                _say("another process polls this state database; waiting to take over")
                while not lease.try_acquire():
                    time.sleep(1)
            _say(f"polling runs in {mask_url_passwords(url)}; Ctrl-C to stop")
            leadership.watch()
            poller.run_forever()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:  # as _distributed_worker: give up the lease (``on_lose`` stops the polling), then shut down
            leadership.stop()
            poller.shutdown(wait=False)


def _serve_metrics(engine: Engine, scheduler: SchedulerConfig, where: tuple[str, int]) -> None:
    """This process's /metrics on ``where`` (host, port): the source queries its polls made (a worker's
    throughput, per process), run counts, and with procrastinate the workers and the queue."""
    from functools import partial

    from prometheus_client import start_http_server

    from trackcheck.scheduling.distributed import queue_facts
    from trackcheck.service.metrics import metrics_for

    metrics = metrics_for(engine)
    if scheduler.backend == "procrastinate":
        metrics.watch_queue(partial(queue_facts, engine.store, scheduler.stalled_after))
    host, port = where
    try:
        start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}", field="metrics-port") from None


def _distributed_worker(
    url: str,
    scheduler: SchedulerConfig,
    retention: Retention,
    setup: PlanSetup,
    metrics: tuple[str, int] | None,
) -> None:
    """``trackcheck worker`` on the procrastinate backend: execute poll jobs until SIGINT/SIGTERM, and plan
    them while this process holds the lease (a planner of its own: no other process is needed)."""
    from trackcheck.engine.core import Engine
    from trackcheck.scheduling import Poller
    from trackcheck.scheduling.distributed import run_worker
    from trackcheck.scheduling.lease import Leadership, lease_for

    engine = Engine(url, setup=setup)
    if metrics is not None:
        _serve_metrics(engine, scheduler, metrics)
    poller = Poller(engine, scheduler.model_copy(update={"scheduler": "background"}), retention=retention)
    poller.start(paused=True)
    leadership = Leadership(lease_for(engine.store.engine), poller.lead, poller.follow)
    leadership.start()
    _say(f"running poll jobs from {mask_url_passwords(url)}; Ctrl-C to stop")
    try:
        assert poller.dispatcher is not None  # backend procrastinate
        run_worker(engine, scheduler, poller.dispatcher)
    finally:
        leadership.stop()
        poller.shutdown(wait=False)


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A trackcheck.toml (default: ./trackcheck.toml if present).",
)
@click.option("--host", help="Address to listen on (default 127.0.0.1; anything else needs TRACKCHECK_API_TOKEN).")
@click.option("--port", type=int, help="Port (default 8000).")
@click.option("--db", help=f"State database URL (default {DEFAULT_URL}), without a password.")
@click.option(
    "--db-password-file",
    type=click.Path(dir_okay=False),
    help="A file holding the state database's password (or TRACKCHECK_DB_PASSWORD_FILE, db_password_file).",
)
@click.option("--plans", type=click.Path(file_okay=False), help="A folder of plan files to load at start.")
@click.option("--workers", type=int, help="HTTP worker processes (default 1); exactly one of them polls.")
def serve(
    config_file: str | None,
    host: str | None,
    port: int | None,
    db: str | None,
    db_password_file: str | None,
    plans: str | None,
    workers: int | None,
) -> None:
    """Start the HTTP API, the dashboard and the scheduler (gunicorn)."""
    from trackcheck.service.config import load_config
    from trackcheck.service.server import serve as run_server

    with _errors():
        _refuse_password_in_argv(db)
        config = load_config(
            config_file,
            host=host,
            port=port,
            db=db,
            db_password_file=db_password_file,
            plans=plans,
            workers=workers,
            log_format=_log_format_flag(),
        )
        _log_as(config.log_format)  # a refusal of the configuration is a line of the chosen format too
        config.check()
        _say(
            f"trackcheck serving on http://{config.host}:{config.port}/ (state: {mask_url_passwords(config.db)}, "
            f"{config.workers} worker(s))"
        )
        run_server(config)


@main.command()
@click.argument("left_url", metavar="LEFT")
@click.argument("left_table")
@click.argument("right_url", metavar="RIGHT")
@click.argument("right_table")
@click.option(
    "-k", "--key", "keys", multiple=True, required=True, help="Key column (repeat, or a,b, for a composite key)."
)
@click.option(
    "-c", "--columns", multiple=True, help="Compared columns, a,b or repeated (default: every column both have)."
)
@click.option("--where", help="A SQL condition both tables are filtered by, e.g. \"created_at >= '2026-12-01'\".")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Differences of each kind listed (0: all); all are counted.",
)
@click.option(
    "--digits",
    multiple=True,
    metavar="FIELD=N",
    help="Compare FIELD to N decimals (numbers) or N fractional digits of seconds.",
)
@click.option(
    "--tolerance",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Values of FIELD within VALUE are equal: amount=0.01, created_at=2s.",
)
@click.option(
    "--bucket",
    metavar="FIELD=SIZE",
    help="Cut the tables by a time field in segments of SIZE (created_at=1h) instead of by key.",
)
@click.option("--query-timeout", default="10m", show_default=True, help="Longest a single checksum query may run.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON document on stdout.")
@config_option
def diff(
    left_url: str,
    left_table: str,
    right_url: str,
    right_table: str,
    keys: tuple[str, ...],
    columns: tuple[str, ...],
    where: str | None,
    limit: int,
    digits: tuple[str, ...],
    tolerance: tuple[str, ...],
    bucket: str | None,
    query_timeout: str,
    as_json: bool,
    config_file: str | None,
) -> None:
    """Compare two tables by key, in any two of PostgreSQL, MariaDB/MySQL, SQLite and DuckDB (exit 0: equal, 1: they
    differ). Checksums of key segments are compared inside each database; rows are read only where they differ.

    LEFT and RIGHT are database URLs without a password, or names of [connections] in trackcheck.toml (whose url
    may take the password from the environment: ${PG_PASSWORD}). LEFT is the reference: rows only it has are
    missing, rows only RIGHT has unexpected.
    """
    from trackcheck import recon

    with _errors():
        try:
            timeout = parse_duration(query_timeout)
        except ValueError as exc:
            raise ConfigError(str(exc), field="--query-timeout") from None
        setup: list[PlanSetup] = []  # trackcheck.toml, read once and only if a side names a connection
        left = recon.Table(_diff_source("left", left_url, timeout, config_file, setup), left_table, where)
        right = recon.Table(_diff_source("right", right_url, timeout, config_file, setup), right_table, where)
        spec = recon.ReconSpec(
            key=_names(keys),
            fields=_names(columns) or None,
            digits={name: _digits(name, value) for name, value in _pairs("--digits", digits).items()},
            tolerance={name: _tolerance(name, value) for name, value in _pairs("--tolerance", tolerance).items()},
            limit=limit,
            **_bucket(bucket),
        )
        try:
            with Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                console=err, transient=True, disable=as_json or not err.is_terminal,
            ) as progress:  # fmt: skip
                task = progress.add_task("reading sizes", total=None)
                said = [time.monotonic()]  # without a terminal (a CI log): a line every DIFF_HEARTBEAT seconds

                def report(what: str, done: int, total: int) -> None:
                    progress.update(task, description=what, completed=done, total=total)
                    if progress.disable and not as_json and time.monotonic() - said[0] >= DIFF_HEARTBEAT:
                        said[0] = time.monotonic()
                        share = f" ({done / total:.0%})" if total else ""
                        _say(f"{what}: {done:,} of {total:,} rows{share}")

                result = recon.reconcile(left, right, spec, report)
        finally:
            left.source.close()
            right.source.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        _diff_summary(result)
    sys.exit(0 if result.verdict == "passed" else 1)


#: seconds between the progress lines ``diff`` prints to a log (stderr without a terminal)
DIFF_HEARTBEAT = 10.0


def _diff_source(
    which: str, given: str, timeout: timedelta, config_file: str | None, setup: list[PlanSetup]
) -> SqlSource:
    """A URL (never with a password: ps shows it), or a ``[connections]`` name of type sql."""
    from trackcheck.connections import Connections
    from trackcheck.sources.sql import SqlOptions, SqlSource

    if "://" in given or given.startswith("sqlite:"):
        try:
            password = make_url(given).password
        except ArgumentError:
            raise ConfigError("not a database URL nor a connection name", field=which) from None
        if password:
            raise ConfigError(
                "a password on the command line is visible in ps: name a [connections] entry of trackcheck.toml "
                "instead (its url may read the password from the environment: ${PG_PASSWORD})",
                field=which,
            )
        options: dict[str, Any] = {"url": given}
    else:
        if not setup:
            setup.append(_plan_setup(config_file))
        try:
            spec = Connections(setup[0].connections)[given]
        except KeyError:
            raise ConfigError(f"no connection {given!r} in trackcheck.toml's [connections]", field=which) from None
        if spec.get("type") != "sql":
            raise ConfigError(
                f"connection {given!r} is of type {spec.get('type')!r}: diff compares sql tables", field=which
            )
        options = {k: v for k, v in spec.items() if k != "type"}
    options["query_timeout"] = timeout
    try:
        return SqlSource(which, SqlOptions.model_validate(options))
    except ValidationError as exc:
        problem = "; ".join(str(error["msg"]) for error in exc.errors(include_url=False))
        raise ConfigError(problem, field=which) from None


def _names(given: tuple[str, ...]) -> list[str]:
    """``-k a,b`` and ``-k a -k b`` alike."""
    return [name.strip() for item in given for name in item.split(",") if name.strip()]


def _pairs(option: str, given: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"write FIELD=VALUE, not {item!r}", field=option)
        pairs[name.strip()] = value.strip()
    return pairs


def _digits(name: str, value: str) -> int:
    if not value.isdigit() or int(value) > 30:
        raise ConfigError(f"{name}={value}: write a number of digits from 0 to 30", field="--digits")
    return int(value)


def _bucket(given: str | None) -> dict[str, Any]:
    """``--bucket created_at=1h`` as the ReconSpec's ``bucket_by`` and ``bucket_seconds``."""
    if given is None:
        return {}
    [(name, size)] = _pairs("--bucket", (given,)).items()
    try:
        seconds = parse_duration(size).total_seconds()
    except ValueError:
        seconds = 0
    if seconds < 1 or not seconds.is_integer():
        raise ConfigError(f"{given}: write FIELD=SIZE with a size of whole seconds (1h, 15m, 1d)", field="--bucket")
    return {"bucket_by": name, "bucket_seconds": int(seconds)}


def _tolerance(name: str, value: str) -> float | timedelta:
    """A number (``0.01``) or a duration (``2s``)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return parse_duration(value)
    except ValueError:
        raise ConfigError(f"{name}={value}: write a number (0.01) or a duration (2s)", field="--tolerance") from None


def _diff_summary(result: Reconciliation) -> None:
    """The verdict, the counts, then the differences listed (as many as --limit asked for)."""
    left, right = result.left, result.right
    click.echo(f"left:  {left.source} {left.table} ({left.rows:,} rows)")
    click.echo(f"right: {right.source} {right.table} ({right.rows:,} rows)")
    shown = {"missing": result.missing, "unexpected": result.unexpected, "duplicates": result.duplicates}
    for kind, listed in shown.items():
        total = result.differences[kind]
        if total:
            keys = ", ".join(json.dumps(k, default=str, ensure_ascii=False) for k in listed)
            more = f" (and {total - len(listed):,} more)" if total > len(listed) else ""
            click.echo(f"{kind} ({total:,}): {keys}{more}")
    if result.mismatches:
        table = Table(title=f"changed rows: {result.differences['changed']:,}", title_justify="left")
        for column in ("key", "field", "left", "right"):
            table.add_column(column, overflow="fold")
        for m in result.mismatches:
            shown_values = (json.dumps(m[k], default=str, ensure_ascii=False) for k in ("key", "expected", "actual"))
            key, expected, actual = (escape(value) for value in shown_values)
            table.add_row(key, escape(m["field"]), expected, actual)
        Console(soft_wrap=True).print(table)
    seconds = result.stats.get("seconds", 0)
    colour = COLOURS[result.verdict]
    err.print(f"[bold {colour}]{result.verdict}[/]: {escape(result.reason)} ({seconds:.1f}s)")
