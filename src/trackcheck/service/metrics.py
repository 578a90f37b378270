"""Prometheus metrics of a deployment, correct whichever worker process answers the scrape.

- ``trackcheck_runs{status}``: runs per status, counted in the state database at scrape time (a custom
  collector), so every worker reports the same numbers; ``trackcheck_state_database_up`` says whether that
  count could be made.
- ``trackcheck_stage_warnings_total{plan, stage}``: the warnings of stages that ended (checks of
  ``severity: warn`` that would have failed, among others), read from the stored evidence at scrape time,
  only what ended since the last scrape (see ``StageWarningsCollector``).
- ``trackcheck_source_queries_total{source_type}``, ``trackcheck_source_errors_total{source_type}`` and the
  ``trackcheck_poll_duration_seconds{source_type}`` histogram: recorded by an ``Engine.query_listeners``
  callback in the process that polls.

Only one worker polls, so per-process counters would read zero whenever another worker answers. With
``PROMETHEUS_MULTIPROC_DIR`` set, prometheus_client keeps every process's values in files there and the
scrape sums them (``MultiProcessCollector``); the directory must exist and be emptied when the deployment
starts. Without it, one plain registry per process is used (right for a single worker).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Text, cast, or_, select
from sqlalchemy.exc import SQLAlchemyError

from trackcheck.errors import ConfigError, StoreError
from trackcheck.states import RunStatus
from trackcheck.store.models import Run, RunStage
from trackcheck.store.repository import aware, utcnow

if TYPE_CHECKING:
    from trackcheck.engine.core import Engine, QueryFacts
    from trackcheck.scheduling.distributed import QueueFacts
    from trackcheck.store.repository import Store

log = logging.getLogger("trackcheck.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: source queries take from a millisecond (a file, SQLite) to the 30 s default query timeout
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_by_engine: weakref.WeakKeyDictionary[Engine, Metrics] = weakref.WeakKeyDictionary()


class RunStatusCollector(Collector):
    """Counts runs by status in the state database on every scrape: the truth, whatever process asks."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("trackcheck_runs", "Runs in the state database by status", labels=["status"])
        up = GaugeMetricFamily("trackcheck_state_database_up", "1 if the state database answered this scrape")
        try:
            counts = self.store.runs_by_status()
        except StoreError as exc:
            log.warning("metrics: cannot count runs: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        for status in sorted(set(RunStatus) | set(counts)):
            runs.add_metric([status], counts.get(status, 0))
        up.add_metric([], 1)
        yield runs
        yield up


class StageWarningsCollector(Collector):
    """``trackcheck_stage_warnings_total{plan, stage}``: the warnings in the evidence of every stage that ended.

    Counted from the state database, like the runs, so every worker process reports the same totals. A
    finished stage never changes, so each scrape reads only the stages that ended since the scrape before
    (less OVERLAP, for ticks that committed late; the ids counted in that window are remembered so none
    counts twice), and only those whose stored evidence holds a warning. A run deleted later leaves its
    warnings counted: the total only grows, as a Prometheus counter must.
    """

    #: how late a tick's write may commit after the time it stamped on its stages
    OVERLAP = timedelta(minutes=10)

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._totals: Tally[tuple[str, str]] = Tally()
        self._since: datetime | None = None
        self._counted: dict[int, datetime] = {}

    def describe(self) -> Iterator[Metric]:
        """The family's name, for the registry: registering reads nothing from the database."""
        yield _warnings_family()

    def collect(self) -> Iterator[Metric]:
        family = _warnings_family()
        with self._lock:
            try:
                self._catch_up()
            except StoreError as exc:  # trackcheck_state_database_up says so; the totals so far stay
                log.warning("metrics: cannot count stage warnings: %s", exc)
            for (plan, stage), total in sorted(self._totals.items()):
                family.add_metric([plan, stage], total)
        yield family

    def _catch_up(self) -> None:
        began = utcnow()
        for stage_id, finished, plan, stage, evidence in _warned_stages(self.store, self._since):
            moment = aware(finished)
            if stage_id in self._counted or moment is None:
                continue
            self._counted[stage_id] = moment
            self._totals[(plan, stage)] += _warnings_in(evidence)
        self._since = since = began - self.OVERLAP
        self._counted = {i: moment for i, moment in self._counted.items() if moment >= since}


def _warnings_family() -> CounterMetricFamily:
    return CounterMetricFamily(
        "trackcheck_stage_warnings",
        "Warnings of stages that ended (checks of severity: warn that would have failed)",
        labels=["plan", "stage"],
    )


def _warned_stages(store: Store, since: datetime | None) -> list[Any]:
    """(id, finished_at, plan, stage, evidence) of the stages that ended at or after ``since`` with a
    warning in their evidence. The text match on the stored JSON only narrows the rows; ``_warnings_in``
    counts exactly. Its two forms: the evidence is written by SQLAlchemy's json.dumps (``"warnings": [``)
    or, by PostgreSQL's bulk writes, by orjson (``"warnings":[``)."""
    evidence = cast(RunStage.evidence, Text)
    query = (
        select(RunStage.id, RunStage.finished_at, Run.plan_name, RunStage.name, RunStage.evidence)
        .join(Run, Run.id == RunStage.run_id)
        .where(
            RunStage.finished_at.is_not(None),
            or_(evidence.like('%"warnings": ["%'), evidence.like('%"warnings":["%')),
        )
    )
    if since is not None:
        query = query.where(RunStage.finished_at >= since)
    with store.session() as s:
        return list(s.execute(query).all())


def _warnings_in(evidence: Any) -> int:
    """How many warnings stored evidence holds (the full number when the list was capped)."""
    if not isinstance(evidence, dict):
        return 0
    truncated = evidence.get("truncated")
    if isinstance(truncated, dict) and isinstance(truncated.get("warnings"), int):
        return int(truncated["warnings"])
    warnings = evidence.get("warnings")
    return len(warnings) if isinstance(warnings, list) else 0


class QueueCollector(Collector):
    """Backend ``procrastinate``: the poll workers and the queue, read from the state database at each scrape
    (``trackcheck_poll_workers``, ``trackcheck_poll_jobs_due``, ``trackcheck_poll_oldest_due_seconds``: how late
    the most overdue tick is, the first sign that the workers do not keep up), and what each worker reported
    it polled, labelled ``worker`` (``trackcheck_worker_polls_total``, ``_runs_total``, ``_failed_total``:
    ``rate()`` of them is its throughput; ``trackcheck_worker_polls_last_minute``)."""

    def __init__(self, facts: Callable[[], QueueFacts]) -> None:
        self.facts = facts

    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        try:
            facts = self.facts()
        except (SQLAlchemyError, StoreError) as exc:
            log.warning("metrics: cannot read the poll queue: %s", type(exc).__name__)
            return
        yield from self._families(facts)

    @staticmethod
    def _families(facts: QueueFacts | None) -> Iterator[Metric]:
        for name, text, value in (
            ("trackcheck_poll_workers", "trackcheck worker processes with a recent heartbeat", "workers"),
            ("trackcheck_poll_jobs_due", "Poll jobs due and not yet taken by a worker", "due"),
            (
                "trackcheck_poll_oldest_due_seconds",
                "How long the oldest poll job not taken has been due",
                "oldest_due_s",
            ),
        ):
            family = GaugeMetricFamily(name, text)
            if facts is not None:
                family.add_metric([], getattr(facts, value))
            yield family
        for name, text, value in (
            ("trackcheck_worker_polls", "Polls a trackcheck worker finished since it started", "polls"),
            ("trackcheck_worker_runs", "Run stages the polls of a trackcheck worker read", "runs"),
            ("trackcheck_worker_failed", "Polls of a trackcheck worker that raised an error", "failed"),
        ):
            counter = CounterMetricFamily(name, text, labels=["worker"])
            for report in facts.reports if facts is not None else ():
                counter.add_metric([report.name], getattr(report, value))
            yield counter
        recent = GaugeMetricFamily(
            "trackcheck_worker_polls_last_minute",
            "Polls a trackcheck worker finished in the last minute",
            labels=["worker"],
        )
        for report in facts.reports if facts is not None else ():
            recent.add_metric([report.name], report.last_minute)
        yield recent


class Metrics:
    """The metrics of one worker process, and the rendering of a scrape."""

    def __init__(self, store: Store, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir:
            _use_multiprocess_values()
        self.registry = CollectorRegistry(auto_describe=True)
        own = None if multiprocess_dir else self.registry  # multiprocess values live in files, not a registry
        labels = ["source_type"]
        self.queries = Counter("trackcheck_source_queries", "Source queries made by polls", labels, registry=own)
        self.errors = Counter("trackcheck_source_errors", "Source queries that failed", labels, registry=own)
        self.scanned = Counter(
            "trackcheck_source_scanned", "Rows or messages sources read to answer polls", labels, registry=own
        )
        self.unparsed = Counter(
            "trackcheck_source_unparsed", "Lines or messages sources read but could not decode", labels, registry=own
        )
        self.duration = Histogram(
            "trackcheck_poll_duration_seconds",
            "Duration of one source query of a poll (for every run it served)",
            labels,
            buckets=DURATION_BUCKETS,
            registry=own,
        )
        self.runs = RunStatusCollector(store)
        self.warnings = StageWarningsCollector(store)
        self.queue: QueueCollector | None = None
        if not multiprocess_dir:
            self.registry.register(self.runs)
            self.registry.register(self.warnings)

    def watch_queue(self, facts: Callable[[], QueueFacts]) -> None:
        """Report the procrastinate backend's workers and queue too (once)."""
        if self.queue is None:
            self.queue = QueueCollector(facts)
            if not self.multiprocess_dir:
                self.registry.register(self.queue)

    def record(self, facts: QueryFacts) -> None:
        """The query listener: quick, and never raises into the poller."""
        try:
            self.queries.labels(facts.source_type).inc()
            self.duration.labels(facts.source_type).observe(max(facts.seconds, 0.0))
            if facts.error is not None:
                self.errors.labels(facts.source_type).inc()
            if facts.scanned:
                self.scanned.labels(facts.source_type).inc(facts.scanned)
            if facts.unparsed:
                self.unparsed.labels(facts.source_type).inc(facts.unparsed)
        except Exception:  # a metrics problem must never fail a poll
            log.exception("metrics: cannot record a source query")

    def render(self) -> bytes:
        """The Prometheus text exposition of this scrape."""
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        registry.register(self.runs)
        registry.register(self.warnings)
        if self.queue is not None:
            registry.register(self.queue)
        return generate_latest(registry)


def _use_multiprocess_values() -> None:
    """prometheus_client chooses where values live when it is first imported; if the variable was set only
    later (e.g. by the server before forking), choose again before our first metric is built."""
    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()


def metrics_for(engine: Engine) -> Metrics:
    """The one Metrics of ``engine``, listening to its source queries (created on first call).

    One per engine, not per app: two apps around one service must not count each query twice.
    """
    metrics = _by_engine.get(engine)
    if metrics is None:
        directory = os.environ.get(MULTIPROC_ENV) or None
        if directory is not None and not os.path.isdir(directory):
            raise ConfigError(f"{MULTIPROC_ENV} is set but {directory} is not a directory: create it")
        metrics = Metrics(engine.store, directory)
        engine.query_listeners.append(metrics.record)
        _by_engine[engine] = metrics
    return metrics
